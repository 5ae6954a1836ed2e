/** One message of a batch row: its time, sender, text and, if it has one, its cid. */
export type Entry = [at: number, from: string, msg: string, cid?: string];

/** Slots a message takes in a batch's flat array: its time, sender, text and cid (or 0). */
export const SLOTS = 4;

/**
 * A batch row's data: JSON of one flat array, four slots a message (its time, sender, text,
 * and cid or 0), with no array per message, and each time written as its distance below the
 * row's newest one, minus one: a small negative integer, which V8 writes out as such, where a
 * time in milliseconds since 1970 takes the general path of a double. A batch with a time that
 * is not a whole number from 0 up is written the way earlier versions wrote every batch (an
 * array per message, times as they are), which is read as ever. `flat` holds the times
 * themselves and is changed in place.
 */
export function encodeBatch(flat: (number | string)[], newest: number): string {
  let plain = Number.isSafeInteger(newest);
  for (let i = 0; plain && i < flat.length; i += SLOTS) {
    const at = flat[i] as number;
    plain = Number.isSafeInteger(at) && at >= 0;
  }
  if (!plain) {
    const entries: (number | string)[][] = [];
    for (let i = 0; i < flat.length; i += SLOTS) {
      // The cid is the last slot, left out where there is none.
      const end = i + SLOTS;
      entries.push(flat.slice(i, typeof flat[end - 1] === 'string' ? end : end - 1));
    }
    return JSON.stringify(entries);
  }
  for (let i = 0; i < flat.length; i += SLOTS) flat[i] = (flat[i] as number) - newest - 1;
  return JSON.stringify(flat);
}

/**
 * A batch row's messages (encodeBatch's either form). A row that is neither, a damaged file's,
 * is refused whole: read on, its slots would reach clients as times and texts of any type.
 */
export function decodeBatch(data: string, newest: number): Entry[] {
  const parsed: unknown = JSON.parse(data);
  if (!Array.isArray(parsed)) throw new Error('history batch is not an array');
  if (parsed.length === 0 || Array.isArray(parsed[0])) {
    for (const entry of parsed as unknown[]) {
      if (!Array.isArray(entry) || (entry.length !== 3 && entry.length !== 4)) corrupt();
      checkMessage(entry[0], entry[1], entry[2], entry[3]);
    }
    return parsed as Entry[];
  }
  if (parsed.length % SLOTS !== 0) throw new Error('history batch has a partial message');
  const entries: Entry[] = [];
  for (let i = 0; i < parsed.length; i += SLOTS) {
    const distance: unknown = parsed[i];
    const from: unknown = parsed[i + 1];
    const msg: unknown = parsed[i + 2];
    const cid: unknown = parsed[i + 3];
    checkMessage(distance, from, msg, cid === 0 ? undefined : cid);
    const at = newest + (distance as number) + 1;
    entries.push(
      typeof cid === 'string'
        ? [at, from as string, msg as string, cid]
        : [at, from as string, msg as string],
    );
  }
  return entries;
}

function checkMessage(at: unknown, from: unknown, msg: unknown, cid: unknown): void {
  if (
    typeof at !== 'number' ||
    typeof from !== 'string' ||
    typeof msg !== 'string' ||
    (cid !== undefined && typeof cid !== 'string')
  ) {
    corrupt();
  }
}

function corrupt(): never {
  throw new Error('history batch is corrupt');
}
