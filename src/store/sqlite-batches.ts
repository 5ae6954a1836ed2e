/**
 * What a batch row keeps of a message besides its time, sender and text: its cid (a string),
 * or that it is an action (IRC's /me): 1 without a cid, [cid] with one.
 */
export type Mark = string | 1 | [cid: string];

/** One message of a batch row: its time, sender, text and, if it has one, its mark. */
export type Entry = [at: number, from: string, msg: string, mark?: Mark];

/** Slots a message takes in a batch's flat array: its time, sender, text and mark (or 0). */
export const SLOTS = 4;

/** A message's mark, or 0 when it has none (the flat array's slot). */
export function markOf(cid: string | undefined, action: boolean): Mark | 0 {
  if (action) return cid === undefined ? 1 : [cid];
  return cid ?? 0;
}

/** The cid and action a mark holds (none: neither). */
export function readMark(mark: Mark | undefined): { cid: string | undefined; action: boolean } {
  if (mark === undefined) return { cid: undefined, action: false };
  if (typeof mark === 'string') return { cid: mark, action: false };
  return { cid: mark === 1 ? undefined : mark[0], action: true };
}

/**
 * A batch row's data: JSON of one flat array, four slots a message (its time, sender, text,
 * and mark or 0), with no array per message, and each time written as its distance below the
 * row's newest one, minus one: a small negative integer, which V8 writes out as such, where a
 * time in milliseconds since 1970 takes the general path of a double. A batch with a time that
 * is not a whole number from 0 up is written the way earlier versions wrote every batch (an
 * array per message, times as they are), which is read as ever. `flat` holds the times
 * themselves and is changed in place.
 */
export function encodeBatch(flat: (number | string | Mark)[], newest: number): string {
  let plain = Number.isSafeInteger(newest);
  for (let i = 0; plain && i < flat.length; i += SLOTS) {
    const at = flat[i] as number;
    plain = Number.isSafeInteger(at) && at >= 0;
  }
  if (!plain) {
    const entries: (number | string)[][] = [];
    for (let i = 0; i < flat.length; i += SLOTS) {
      // The mark is the last slot, left out where there is none.
      const end = i + SLOTS;
      entries.push(flat.slice(i, flat[end - 1] === 0 ? end - 1 : end) as (number | string)[]);
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
    const mark: unknown = parsed[i + 3];
    checkMessage(distance, from, msg, mark === 0 ? undefined : mark);
    const at = newest + (distance as number) + 1;
    entries.push(
      mark === 0
        ? [at, from as string, msg as string]
        : [at, from as string, msg as string, mark as Mark],
    );
  }
  return entries;
}

function checkMessage(at: unknown, from: unknown, msg: unknown, mark: unknown): void {
  if (
    typeof at !== 'number' ||
    typeof from !== 'string' ||
    typeof msg !== 'string' ||
    (mark !== undefined && !isMark(mark))
  ) {
    corrupt();
  }
}

function isMark(mark: unknown): mark is Mark {
  return (
    typeof mark === 'string' ||
    mark === 1 ||
    (Array.isArray(mark) && mark.length === 1 && typeof mark[0] === 'string')
  );
}

function corrupt(): never {
  throw new Error('history batch is corrupt');
}
