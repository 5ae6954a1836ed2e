/**
 * A client walking through rooms: join, one chat of 4,096 characters (distinct text, as
 * every chat read from the network is), leave, next room, each step a few turns apart.
 */
import type { Request } from '../../src/protocol/messages.js';
import { type FakePeer, sendRequest } from './fake-peer.js';

/** Lets `n` turns of the event loop pass. */
export async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

/** Walks `walker` through rooms walk0 … walk<count - 1>, dropping what it is sent. */
export async function walkRooms(walker: FakePeer, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const room = `walk${i}`;
    sendRequest(walker, { cmd: '100', room } as Request);
    await turns(2);
    sendRequest(walker, { cmd: '7', room, msg: `${i}:`.padEnd(4096, 'x') } as Request);
    await turns(2);
    sendRequest(walker, { cmd: '102', room } as Request);
    await turns(1);
    walker.take();
  }
}
