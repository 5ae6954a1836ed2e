import { afterEach, expect, it } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import type { Session } from '../../../src/core/session.js';
import type { Request, ServerMessage } from '../../../src/protocol/messages.js';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';
import { FakePeer } from '../../helpers/fake-peer.js';
import { memoryNodes } from '../../helpers/quiet-node.js';

const CAPS = ['errors', 'rooms', 'history'];
let chat: Chat;

afterEach(() => chat?.shutdown());

function send(peer: FakePeer, request: Request): void {
  peer.session.receive({ ok: true, request });
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !check(); i++) await new Promise((r) => setTimeout(r, 2));
  if (!check()) throw new Error(`timed out waiting for ${what}`);
}

const count = (messages: ServerMessage[], cmd: string) =>
  messages.filter((m) => m.cmd === cmd).length;

/** Per-room state the session keeps; private, so read through a cast. */
function perRoom(session: Session): number {
  const s = session as unknown as { floors?: Map<string, unknown>; held?: Map<string, unknown> };
  return (s.floors?.size ?? 0) + (s.held?.size ?? 0);
}

const chats: [string, () => Chat][] = [
  [
    'one process',
    () =>
      new Chat({
        history: new MemoryHistoryStore({ retention: { maxMessages: 100, maxAgeMs: 0 } }),
        rateLimit: 0,
      }),
  ],
  ['a node of a cluster', () => memoryNodes({ rateLimit: 0 }).a.chat],
];

it.each(chats)(
  'keeps no per-room state for rooms a member has left, however many it went through (%s)',
  async (_, make) => {
    chat = make();
    const ann = new FakePeer();
    ann.session = chat.open(ann);
    send(ann, { cmd: '0', nickname: 'ann', caps: CAPS } as Request);
    await until('the lobby', () => count(ann.outbox, '101') === 1);
    // Each room: made, given a message, left, joined again (its history replayed), left.
    const rooms = 300;
    for (let i = 0; i < rooms; i++) {
      const room = `r${i}`;
      send(ann, { cmd: '100', room });
      await until(`${room} joined`, () => count(ann.outbox, '101') === 2 * i + 2);
      send(ann, { cmd: '7', msg: 'hi', room } as Request);
      await until(`${room} stored`, () => count(ann.outbox, '71') === i + 1);
      send(ann, { cmd: '102', room });
      send(ann, { cmd: '100', room });
      await until(`${room} joined again`, () => count(ann.outbox, '101') === 2 * i + 3);
      send(ann, { cmd: '102', room });
      await until(`${room} left again`, () => count(ann.outbox, '103') === 2 * i + 2);
    }
    expect(count(ann.outbox, '90')).toBe(0);
    // Only rooms it is in may hold state: the lobby at most.
    expect(perRoom(ann.session)).toBeLessThanOrEqual(ann.session.rooms.size);
    // Nor does the server keep the emptied rooms, or their subscriptions.
    expect(chat.rooms.count).toBe(0);
    // On a cluster, nor their subscriptions and rosters: the lobby's at most.
    const node = (
      chat as unknown as { node?: { interest: Map<string, number>; rosters: Map<string, unknown> } }
    ).node;
    if (chat.cluster !== undefined) {
      expect(node!.interest.size).toBeLessThanOrEqual(1);
      expect(node!.rosters.size).toBeLessThanOrEqual(1);
    }
  },
);
