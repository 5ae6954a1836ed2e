/** One stored chat, as its sender is told of it ("71"). */
export interface StoredChat {
  /** The room's name, as the sender is told it. */
  readonly room: string;
  /** The room's key, by which copies are told apart. */
  readonly key: string;
  readonly id: number;
  readonly at: number;
}

/**
 * Chats kept per list while they cannot be told apart yet: past it, the oldest goes (told,
 * if it was a copy waiting). A client limited to 20 chats a second fills it in 50 s.
 */
const MAX_KEPT = 1_024;

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
  /**
   * Chats this node stored whose copies have not come yet (a room catching up), in the
   * order of their replies: for each room, the order of their ids.
   */
  private expected: StoredChat[] = [];
  /** Chats to tell once the session's "03" is out (a resume's takeover granted). */
  private untold: StoredChat[] = [];

  begin(): void {
    this.storing++;
  }

  /**
   * A chat of the session this node was storing has its reply (`stored` undefined: it
   * failed, or was a duplicate, which is not published). What to acknowledge besides it:
   * copies no reply claims once none is due.
   */
  end(stored: StoredChat | undefined): StoredChat[] {
    this.storing = Math.max(0, this.storing - 1);
    if (stored !== undefined) {
      const at = lastIndexOf(this.early, stored);
      if (at >= 0) this.early.splice(at, 1);
      else keep(this.expected, stored);
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
      // A room's chats come in id order: the room's earlier ones waited for will not come
      // (an epoch began, or the room was left).
      this.expected = this.expected.filter((c, i) => i > at || c.key !== chat.key);
      return [];
    }
    if (this.storing === 0) return [chat];
    const dropped = keep(this.early, chat);
    return dropped === undefined ? [] : [dropped];
  }

  /** Keeps `chats` until the session's "03" is out (takeUntold()); past MAX_KEPT, the oldest go. */
  hold(chats: readonly StoredChat[]): void {
    for (const chat of chats) keep(this.untold, chat);
  }

  /** What hold() kept, now to be told. */
  takeUntold(): StoredChat[] {
    const told = this.untold;
    this.untold = [];
    return told;
  }
}

function same(a: StoredChat, b: StoredChat): boolean {
  return a.id === b.id && a.key === b.key;
}

/** Searched from the end: a reply most often follows its own copy at once. */
function lastIndexOf(list: readonly StoredChat[], chat: StoredChat): number {
  for (let i = list.length - 1; i >= 0; i--) if (same(list[i]!, chat)) return i;
  return -1;
}

/** Adds `chat` to `list`, bounded: what falls out. */
function keep(list: StoredChat[], chat: StoredChat): StoredChat | undefined {
  list.push(chat);
  return list.length > MAX_KEPT ? list.shift() : undefined;
}
