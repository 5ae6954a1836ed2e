import { LOBBY } from '../../src/protocol/codes.js';
import type { Position, RoomPosition } from '../../src/protocol/messages.js';

/** A chat sent with a `cid` and not yet acknowledged by "71" (or refused by "90"). */
export interface UnackedChat {
  cid: string;
  room: string;
  msg: string;
  /** IRC's /me (capability "actions"). */
  action?: true;
  /** The connection it was last written on; 0 while still queued. */
  sentOn: number;
}

/** The server's CONNECT accepts at most this many `since` entries. */
export const MAX_SINCE = 20;

/**
 * What a client keeps to come back after a dropped connection with nothing
 * missing and nothing twice (docs/protocol.md, "History and resume"): the
 * resume token, the rooms it is in with the last message it has of each, and
 * the chats the server has not acknowledged yet. No I/O: Connection feeds it.
 */
export class ResumeState {
  token: string | undefined;
  private readonly rooms = new Map<string, { epoch: string | undefined; id: number }>();
  private unacked: UnackedChat[] = [];
  private counter = 0;

  constructor(private readonly cidPrefix: string) {
    this.rooms.set(LOBBY, { epoch: undefined, id: 0 });
  }

  /** A new session: nothing to take back but, optionally, a token and rooms to rejoin. */
  reset(token?: string, rooms: readonly string[] = []): void {
    this.token = token;
    this.rooms.clear();
    this.rooms.set(LOBBY, { epoch: undefined, id: 0 });
    for (const room of rooms) this.rooms.set(room, { epoch: undefined, id: 0 });
    this.unacked = [];
  }

  /** The rooms the client is in, the lobby first. */
  joined(): string[] {
    return [...this.rooms.keys()];
  }

  has(room: string): boolean {
    return this.rooms.has(room);
  }

  /**
   * A "101" for the room. Under another epoch the old position names nothing
   * any more: what follows starts the new history.
   */
  entered(room: string, epoch: string | undefined): void {
    const at = this.rooms.get(room);
    if (at === undefined || (epoch !== undefined && at.epoch !== epoch))
      this.rooms.set(room, { epoch, id: 0 });
  }

  left(room: string): void {
    if (room !== LOBBY) this.rooms.delete(room);
  }

  /**
   * A message of the room's current history reached the client ("70" or "71").
   * The server delivers each room in id order, so the newest id is the position.
   */
  seen(room: string, id: number): void {
    const at = this.rooms.get(room);
    if (at !== undefined && id > at.id) at.id = id;
  }

  position(room: string): Position | undefined {
    const at = this.rooms.get(room);
    return at?.epoch === undefined ? undefined : { epoch: at.epoch, id: at.id };
  }

  /** The `since` of a CONNECT: every room with a known history. */
  since(): RoomPosition[] {
    const out: RoomPosition[] = [];
    for (const [room, at] of this.rooms) {
      if (at.epoch !== undefined && out.length < MAX_SINCE)
        out.push({ room, epoch: at.epoch, id: at.id });
    }
    return out;
  }

  /** Records a chat about to be sent; its cid makes a re-send count once. */
  send(room: string, msg: string, action = false): UnackedChat {
    const chat: UnackedChat = { cid: `${this.cidPrefix}-${++this.counter}`, room, msg, sentOn: 0 };
    if (action) chat.action = true;
    this.unacked.push(chat);
    return chat;
  }

  /** The "71" for a cid; undefined if it is not (or no longer) waiting. */
  ack(cid: string): UnackedChat | undefined {
    const i = this.unacked.findIndex((c) => c.cid === cid);
    return i < 0 ? undefined : this.unacked.splice(i, 1)[0];
  }

  /**
   * A "90" answering a CHAT: replies come in request order and each chat gets
   * one answer, so it is the oldest chat written on this connection.
   */
  refused(connection: number): UnackedChat | undefined {
    const i = this.unacked.findIndex((c) => c.sentOn === connection);
    return i < 0 ? undefined : this.unacked.splice(i, 1)[0];
  }

  /** Chats to send again after reconnecting, in the order they were typed. */
  pending(): readonly UnackedChat[] {
    return this.unacked;
  }
}
