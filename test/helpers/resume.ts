import type { Delivery, Reply } from '../../src/core/events.js';
import type { HistoryStore } from '../../src/core/history.js';
import type { DisconnectReason } from '../../src/core/ports.js';
import { type Recipient, Replays } from '../../src/core/replay.js';
import type { SessionState } from '../../src/core/session.js';
import type { Position } from '../../src/protocol/messages.js';

/** A member that records what "101" says. */
class Member implements Recipient {
  state: SessionState = 'joined';
  goneWith: DisconnectReason | undefined;
  readonly replies: Reply[] = [];
  reply(reply: Reply): void {
    this.replies.push(reply);
  }
  async sendPaced(_deliveries: readonly Delivery[]): Promise<void> {}
  async release(): Promise<void> {}
}

/** What a member resuming in `room` from `since` is told in its "101". */
export async function resume(store: HistoryStore, room: string, since: Position) {
  const member = new Member();
  await new Replays(store, 10).join(member, { key: room, name: room, lastId: 0 }, [], 1, since);
  const joined = member.replies[0];
  return joined?.type === 'room-joined' ? joined.history : undefined;
}
