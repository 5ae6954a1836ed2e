/**
 * A client walking through rooms (join, chat, leave, next room) with `--history
 * memory`: each walked room keeps its messages for --history-max-age, up to
 * --history-max-messages, so only the store's budget (--history-memory-max)
 * bounds what the walk leaves behind. One message of 4,096 characters is some
 * 8 KB; 2,000 rooms of it would be 16 MB. Under a 1 MiB budget the rooms walked
 * first lose their messages and keep their top id only, so the walk costs less
 * than 2 KB a room, the store's share and the rooms' registry together.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { expect, it } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';
import { joinChat } from '../../helpers/fake-peer.js';
import { turns, walkRooms } from '../../helpers/walk.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

it('keeps less than 2 KB for each room a client walked through, within the memory budget (--history memory)', async () => {
  const chat = new Chat({
    history: new MemoryHistoryStore({
      retention: { maxMessages: 1000, maxAgeMs: 30 * 24 * 3600 * 1000 },
      pruneIntervalMs: 0,
      maxBytes: 1024 * 1024,
    }),
    maxMessage: 4096,
  });
  const walker = joinChat(chat, 'walker', ['rooms', 'history']);
  await turns(2);
  const ROOMS = 2000;
  gc();
  const before = process.memoryUsage().heapUsed;
  await walkRooms(walker, ROOMS);
  expect([...chat.rooms.all()]).toHaveLength(1);
  gc();
  const perRoom = (process.memoryUsage().heapUsed - before) / ROOMS;
  chat.shutdown();
  expect(perRoom).toBeLessThan(2048);
}, 60_000);
