/**
 * What a HISTORY page costs Redis on a cluster. A room's stream entry holds one append
 * call's chats, and a page is read by the entries holding its ids: a page of one short
 * message that shared its entry with long ones (six bytes a character once a control
 * character is escaped) fetched the whole entry for each request, hundreds of KB sent by
 * Redis and parsed by the node for a few bytes shown, at the flood-control rate of each of
 * an address's connections. And a page cut to its byte budget read all of its `limit`
 * first. A page should cost Redis about what it holds, as a repeated cid does
 * (cluster-hostile, "a chat re-sent with the cid of a long one costs Redis about its own
 * bytes").
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { roomKey } from '../../src/core/rooms.js';
import { DEFAULT_REDIS_PREFIX, roomTag } from '../../src/store/redis-history.js';
import { useCluster } from '../helpers/cluster.js';
import type { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history'];
/** HISTORY requests measured: within the default burst of one connection. */
const PAGES = 40;
/** Long chats written with the short one, in one write. */
const LONG = 15;

const file = useCluster('cluster-history-read-cost', 1, []);

async function member(nickname: string): Promise<RawClient> {
  const c = await file.open(0);
  c.sendPy({ cmd: '0', nickname, caps: CAPS, lobby: false });
  await c.expect('03', 10_000);
  return c;
}

describe.skipIf(skip)('the cost of a HISTORY page in Redis', () => {
  it('a page of one short message costs Redis about that message, not its whole entry', async () => {
    const admin = new Redis(file.cluster.redis.url, { maxRetriesPerRequest: 1 });
    try {
      const writer = await member('entrywriter');
      const long = '\u0001'.repeat(4000);
      // The short chat first, then long ones, in one write: the first turn's append call
      // holds the short one and what else arrived with it. The entry is checked below;
      // a write split early is tried again in a new room, a bounded number of times.
      let room = '';
      let shortId = 0;
      let entryBytes = 0;
      // Up to 5 rooms; the first whose entry holds long ones is read.
      for (let attempt = 0; attempt < 5 && entryBytes < 50_000; attempt++) {
        room = `pages${attempt}`;
        writer.sendPy({ cmd: '100', room });
        await writer.expect('101', 10_000);
        let frames = `${JSON.stringify({ cmd: '7', room, msg: 'x' })}\n`;
        for (let i = 0; i < LONG; i++)
          frames += `${JSON.stringify({ cmd: '7', room, msg: long })}\n`;
        writer.write(frames);
        const acks = [];
        for (let i = 0; i < LONG + 1; i++) acks.push(await writer.expect('71', 20_000));
        shortId = Number(acks[0]!.id);
        const msgs = `${DEFAULT_REDIS_PREFIX}h:{r${roomTag(roomKey(room))}}:msgs`;
        const entry = (await admin.xrevrange(msgs, `${shortId}-0`, '-', 'COUNT', 1))[0];
        expect(entry?.[0]).toBe(`${shortId}-0`);
        entryBytes = entry![1].reduce((sum, field) => sum + Buffer.byteLength(field), 0);
      }
      // Stored with the long ones in one call's entry (some 24 KB each as stored), the short
      // message would cost each page that whole entry: a few hundred KB.

      const reader = await member('pagereader');
      reader.sendPy({ cmd: '100', room });
      const joined = await reader.expect('101', 10_000);
      // The join's page of history ends with the room's newest message.
      await reader.waitFor((m) => m.cmd === '70' && m.id === joined.top);
      reader.drain();
      const sent = async () =>
        Number((await admin.info('stats')).match(/total_net_output_bytes:(\d+)/)![1]);
      const before = await sent();
      const ask = `${JSON.stringify({ cmd: '106', room, before: shortId + 1, limit: 1 })}\n`;
      reader.write(ask.repeat(PAGES));
      for (let i = 0; i < PAGES; i++) {
        const page = await reader.expect('107', 20_000);
        expect(page.messages).toMatchObject([{ id: shortId, msg: 'x' }]);
      }
      const bytes = (await sent()) - before;
      // Each page holds a message of one character; the room's epoch and top are read
      // with it, and the entry holding it: at most some 12 K of text, or one long message.
      expect(bytes).toBeLessThan(PAGES * 20_000);
      writer.close();
      reader.close();
    } finally {
      admin.disconnect();
    }
  }, 90_000);

  it('a HISTORY page cut to its byte budget reads about that page from Redis, not all of `limit`', async () => {
    const admin = new Redis(file.cluster.redis.url, { maxRetriesPerRequest: 1 });
    try {
      const writer = await member('budgetwriter');
      const room = 'budget';
      writer.sendPy({ cmd: '100', room });
      await writer.expect('101', 10_000);
      // A hundred chats of 4,000 control characters: some 24 KB each as sent, so a page
      // (at most about 256 KB) holds about ten of them.
      const long = '\u0001'.repeat(4000);
      for (let i = 0; i < 100; i++) writer.sendPy({ cmd: '7', room, msg: long });
      for (let i = 0; i < 100; i++) await writer.expect('71', 20_000);
      writer.drain();
      const sent = async () =>
        Number((await admin.info('stats')).match(/total_net_output_bytes:(\d+)/)![1]);
      const before = await sent();
      const pages = 10;
      let shown = 0;
      for (let i = 0; i < pages; i++) {
        writer.sendPy({ cmd: '106', room, limit: 100 });
        const page = await writer.expect('107', 20_000);
        shown += (page.messages as unknown[]).length;
      }
      // Each page shows about a tenth of what it asked for.
      expect(shown).toBeLessThan(pages * 20);
      const bytes = (await sent()) - before;
      // Read whole, the hundred messages are some 2.4 MB of Redis's output for each page
      // of about 256 KB. A read of the page's own messages, whole stream entries and the
      // room's epoch and top included, stays under a megabyte.
      expect(bytes).toBeLessThan(pages * 1_000_000);
      writer.close();
    } finally {
      admin.disconnect();
    }
  }, 90_000);
});
