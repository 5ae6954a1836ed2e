/**
 * Values from the network as text and numbers, whatever they are. String() and Number()
 * throw for an object whose `toString` and `valueOf` are not functions, which JSON can send
 * (`{"toString": ""}`): a client must show such a value, not fail on it.
 */
export function asString(value: unknown): string {
  if (typeof value === 'string') return value;
  // A field left out is no text, not the word "undefined" in a member's place.
  if (value === undefined || value === null) return '';
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** A network number as a number (NaN for what is none), never throwing. */
export function asNumber(value: unknown): number {
  return typeof value === 'number' ? value : Number(asString(value));
}
