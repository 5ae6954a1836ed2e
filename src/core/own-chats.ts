/** One stored chat, as its sender is told of it ("71"). */
export interface StoredChat {
  /** The room's name, as the sender is told it. */
  readonly room: string;
  /** The room's key, by which copies are told apart. */
  readonly key: string;
  readonly id: number;
  readonly at: number;
}

/** Copies kept per session while they cannot be told apart yet: past it, the oldest is told. */
const MAX_KEPT = 64;

const same = (a: StoredChat, b: StoredChat) => a.id === b.id && a.key === b.key;

/**
 * On a node of a cluster, a session's chats the broker hands back: which this node stored
 * for the session (acknowledged by their append's reply) and which another connection of the
 * session did, on another node, before a resume moved it here. One process acknowledges a
 * chat still being stored when its session is taken over to the connection that took it;
 * across nodes the old node cannot, so this node acknowledges such a chat on its arrival.
 * A copy of the node's own chat may come before its reply: while the session has chats
 * being stored here, a copy waits until their replies have said which ones are theirs.
 */
export class OwnChats {
  /** Chats of the session being stored by this node, their replies not in yet. */
  private storing = 0;
  /** Copies that came while `storing`: told once no reply claims them. */
  private early: StoredChat[] = [];
  /** Chats this node stored whose copies have not come yet (a room catching up). */
  private expected: StoredChat[] = [];

  begin(): void {
    this.storing++;
  }

  /**
   * A chat of the session this node was storing has its reply (`stored` undefined: it
   * failed). What to acknowledge besides it: copies no reply claims once none is due.
   */
  end(stored: StoredChat | undefined): StoredChat[] {
    this.storing = Math.max(0, this.storing - 1);
    if (stored !== undefined) {
      const at = this.early.findIndex((c) => same(c, stored));
      if (at >= 0) this.early.splice(at, 1);
      else this.keep(this.expected, stored);
    }
    if (this.storing > 0 || this.early.length === 0) return [];
    const told = this.early;
    this.early = [];
    return told;
  }

  /** A copy of a chat of the session came from the broker: what to acknowledge now. */
  arrived(chat: StoredChat): StoredChat[] {
    const at = this.expected.findIndex((c) => same(c, chat));
    if (at >= 0) {
      this.expected.splice(at, 1);
      return [];
    }
    if (this.storing === 0) return [chat];
    return this.keep(this.early, chat);
  }

  /** Adds `chat` to `list`, bounded: what falls out (of `early`) is told now. */
  private keep(list: StoredChat[], chat: StoredChat): StoredChat[] {
    list.push(chat);
    const dropped = list.length > MAX_KEPT ? list.shift() : undefined;
    return dropped !== undefined && list === this.early ? [dropped] : [];
  }
}
