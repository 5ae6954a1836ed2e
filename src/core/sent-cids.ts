/**
 * The nickname under which a session first sent each of its recent cids, per room.
 *
 * A store finds a repeated cid by (room, sender, cid). A client that pipelined a
 * chat and a RENAME and lost both replies re-sends the chat after its resume under
 * the new nickname: looked up by that one, the cid is new, and the room would get
 * the chat twice. So the session remembers the name each cid went out under, and
 * the chat is looked up (and indexed) by it (`MessageDraft.cidFrom`). The memory
 * goes over to the session that takes this one back by its resume token.
 */

/** How many cids a session remembers; the oldest is forgotten first. */
export const MAX_SENT_CIDS = 64;

/**
 * (room, cid) as a 53-bit number: a map entry costs a few dozen bytes instead of the
 * two strings (up to 64 characters each), MAX_SENT_CIDS per connection at --max-conns. Two
 * pairs of one session with the same hash share the name of the first, which is
 * still one of this session's names, the same for every re-send of either.
 */
function cidHash(room: string, cid: string): number {
  let h1 = 0xdeadbeef ^ room.length;
  let h2 = 0x41c6ce57 ^ cid.length;
  for (const text of [room, cid]) {
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 2654435761);
      h2 = Math.imul(h2 ^ c, 1597334677);
    }
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

export class SentCids {
  /** cidHash -> nickname, oldest first. */
  private readonly names = new Map<number, string>();

  /**
   * The nickname `cid` was first sent under in `room` by this session, remembered as
   * `nickname` (the sender's current one) if it is new.
   */
  firstSender(room: string, cid: string, nickname: string): string {
    const key = cidHash(room, cid);
    const known = this.names.get(key);
    if (known !== undefined) return known;
    if (this.names.size >= MAX_SENT_CIDS) {
      this.names.delete(this.names.keys().next().value!);
    }
    this.names.set(key, nickname);
    return nickname;
  }

  get size(): number {
    return this.names.size;
  }
}
