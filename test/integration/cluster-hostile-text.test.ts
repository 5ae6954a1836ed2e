/**
 * Generated hostile text crossing a three-node cluster (real redis-server, real processes):
 * the append script stores and publishes each turn's chats as JSON that other nodes parse
 * and encode again for their clients. Every receiver, on every node and in every dialect,
 * must get the same text in the same order (course clients made visible, in whole 1024-byte
 * frames), and history paged or recovered on another node must read the same.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { visible } from '../../src/protocol/text.js';
import { useCluster } from '../helpers/cluster.js';
import type { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';
import { wsClient } from '../helpers/ws-client.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history', 'renames', 'whispers'];
const line = (v: unknown) => `${JSON.stringify(v)}\n`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** What must never reach a course client's terminal as it is. */
const TERMINAL_UNSAFE =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the controls are what it looks for
  /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

const PIECES = [
  '],[',
  '"]',
  '\\"',
  '\\u0000',
  '\u0000',
  '\u001b[31m',
  '\u001b]0;owned\u0007',
  '\u009b',
  '\u0085',
  '\u007f',
  '\u2028',
  '\u2029',
  '\u202e',
  '\r\n$5\r\nhello\r\n',
  '*3\r\n$7\r\nPUBLISH\r\n',
  '["C","x",1,1,[0,"a","b"]]',
  '{"o":"x","e":{"type":"chat"}}',
  '😀',
  '\ufeff',
  '\uffff',
  '\\',
  '"',
  'é',
  '\u0301',
  '%d',
  "'",
  ',',
  ']',
  '[',
  ':',
  '0:1:2,',
  '\t',
  '\ud83d\ude00',
  '\u{10ffff}',
];

/** Hostile text of 1 to 4096 code points, without the banned words. */
function hostileText(maxPieces = 40) {
  return fc
    .array(
      fc.oneof(
        fc.constantFrom(...PIECES),
        fc.string({ unit: 'binary', maxLength: 8 }),
        fc.string({ unit: 'grapheme-ascii', maxLength: 8 }),
      ),
      { minLength: 1, maxLength: maxPieces },
    )
    .map((ps) => ps.join(''))
    .filter((s) => s.length > 0 && !/i hate professor/i.test(s) && [...s].length <= 4096);
}

function chatsOf(c: RawClient, from: string, room = 'lobby'): string[] {
  return c.received
    .filter(
      (m) =>
        m.cmd === '70' &&
        m.from === from &&
        m.whisper === undefined &&
        (m.room === undefined ? room === 'lobby' : m.room === room),
    )
    .map((m) => m.msg as string);
}

describe.skipIf(skip)('hostile chats crossing nodes', () => {
  const file = useCluster('cluster-hostile-text', 3, []);

  it('every receiver on every node and dialect gets the same text, in order', async () => {
    /** A client of `node` speaking JSON lines with CAPS, joined as `nickname`. */
    const ext = async (node: number, nickname: string) => {
      const c = await file.open(node);
      c.write(line({ cmd: '0', nickname, caps: CAPS }));
      await c.expect('03', 10_000);
      return c;
    };
    /** The sender's chats among what a client received. */
    const fromSender = <T extends { cmd?: unknown; from?: unknown }>(received: readonly T[]) =>
      received.filter((m) => m.cmd === '70' && m.from === 'sender');
    const sender = await ext(0, 'sender');
    const r0 = await ext(0, 'rzero');
    const r1 = await ext(1, 'rone');
    const courseBytes = new Map<RawClient, Buffer[]>();
    const course = async (node: number, nick: string) => {
      const c = await file.open(node);
      const chunks: Buffer[] = [];
      courseBytes.set(c, chunks);
      c.socket.on('data', (b: Buffer) => chunks.push(b));
      c.sendPy({ cmd: '0', nickname: nick });
      await c.expect('03', 10_000);
      return c;
    };
    const c0 = await course(0, 'czero');
    const c1 = await course(1, 'cone');
    const c2 = await course(2, 'ctwo');
    const ws = await wsClient(file.cluster.nodes[2]!.httpPort!);
    ws.send({ cmd: '0', nickname: 'wtwo', caps: CAPS });
    await ws.expect('03', 10_000);
    await sleep(500);

    const texts = fc.sample(hostileText(), { seed: 4242, numRuns: 150 });
    // Some near the length limit, astral and escape-heavy.
    texts.push('😀'.repeat(4096), '\u0000'.repeat(4096), '"'.repeat(4096), `${'a'.repeat(4095)}😀`);
    texts.push('\u001b'.repeat(2000) + '😀'.repeat(2096));
    const sent: string[] = [];
    let cid = 0;
    for (let i = 0; i < texts.length; ) {
      // Several per write: one script call (B path or the cid path) per batch.
      const n = 1 + (i % 7);
      let out = '';
      for (const t of texts.slice(i, i + n)) {
        const withCid = i % 3 === 0;
        out += line(withCid ? { cmd: '7', msg: t, cid: `c${cid++}` } : { cmd: '7', msg: t });
        sent.push(t);
      }
      sender.write(out);
      i += n;
      await sleep(20);
    }
    const last = 'the end';
    sender.write(line({ cmd: '7', msg: last }));
    sent.push(last);

    const done = (m: { cmd: string; msg?: unknown }) => m.cmd === '70' && m.msg === last;
    await Promise.all([r0.waitFor(done, 1, 20_000), r1.waitFor(done, 1, 20_000)]);
    for (const c of [c0, c1, c2])
      await c.waitFor((m) => m.cmd === '70' && m.msg === last, 1, 20_000);
    for (let i = 0; i < 200 && !ws.received.some((m) => m.msg === last); i++) await sleep(50);

    const errors = sender.received.filter((m) => m.cmd === '90');
    expect(errors).toEqual([]);
    expect(chatsOf(r0, 'sender')).toEqual(sent);
    expect(chatsOf(r1, 'sender')).toEqual(sent);
    expect(fromSender(ws.received).map((m) => m.msg)).toEqual(sent);
    // Course clients: the text made visible, maybe cut into several "70"s; never a control.
    const shown = sent.map(visible).join('');
    for (const c of [c0, c1, c2]) {
      const got = chatsOf(c, 'sender');
      for (const g of got) expect(TERMINAL_UNSAFE.test(g), JSON.stringify(g)).toBe(false);
      expect(got.join('')).toBe(shown);
      expect(c.refusals).toEqual([]);
      for (const f of c.rawFrames) expect(Buffer.byteLength(f)).toBeLessThanOrEqual(1024);
    }
    // What a course client's recv(1024) would see: every block one whole JSON object.
    for (const [c, chunks] of courseBytes) {
      const all = Buffer.concat(chunks);
      expect(all.length % 1024, `course client ${[...courseBytes.keys()].indexOf(c)}`).toBe(0);
      for (let at = 0; at < all.length; at += 1024) {
        const block = all.subarray(at, at + 1024);
        expect(block[1023]).toBe(0x0a);
        expect(() => JSON.parse(block.toString('utf8'))).not.toThrow();
        expect(block.includes(0)).toBe(false);
      }
    }
    // Ids strictly increasing by 1 at both ext receivers and same on both.
    const ids0 = fromSender(r0.received).map((m) => m.id);
    const ids1 = fromSender(r1.received).map((m) => m.id);
    expect(ids1).toEqual(ids0);
    expect(ids0).toEqual(ids0.map((_, i) => (ids0[0] as number) + i));
    const ats = (
      received: readonly { cmd?: unknown; from?: unknown; id?: unknown; at?: unknown }[],
    ) => fromSender(received).map((m) => `${m.id}@${m.at}`);
    expect(ats(r1.received)).toEqual(ats(r0.received));
    expect(ats(ws.received)).toEqual(ats(r0.received));
    // Every session still answers.
    for (const c of [sender, r0, r1, c0, c1, c2]) {
      c.write(line({ cmd: '4' }));
      await c.expect('40', 5_000);
    }
    // History read back on node 1 is the same text.
    r1.drain();
    r1.write(line({ cmd: '106', room: 'lobby', limit: 100 }));
    const page = await r1.expect('107', 10_000);
    const msgs = (page.messages as { from: string; msg: string }[])
      .filter((m) => m.from === 'sender')
      .map((m) => m.msg);
    expect(msgs).toEqual(sent.slice(sent.length - msgs.length));
    // A fresh member on node 2 pages back through the whole history, and another recovers
    // it with since {epoch, 0}: the same text as live, in order.
    const epoch = (
      r1.rawFrames.map((f) => JSON.parse(f)).find((m) => m.cmd === '101') as { epoch: string }
    ).epoch;
    const pager = await ext(2, 'pager');
    const all: { id: number; from: string; msg: string }[] = [];
    let before: number | undefined;
    for (let i = 0; i < 100; i++) {
      pager.write(
        line(
          before === undefined
            ? { cmd: '106', room: 'lobby', limit: 100 }
            : { cmd: '106', room: 'lobby', limit: 100, before },
        ),
      );
      const pg = await pager.expect('107', 10_000);
      const ms = pg.messages as { id: number; from: string; msg: string }[];
      all.unshift(...ms);
      if (!pg.more || ms.length === 0) break;
      before = ms[0]!.id;
    }
    expect(all.filter((m) => m.from === 'sender').map((m) => m.msg)).toEqual(sent);
    const rec = await file.open(2);
    rec.write(
      line({ cmd: '0', nickname: 'recov', caps: CAPS, since: [{ room: 'lobby', epoch, id: 0 }] }),
    );
    await rec.expect('03', 10_000);
    const j = await rec.expect('101', 10_000);
    expect(j.recovered).toBe(true);
    const top = j.top as number;
    await rec.waitFor((m) => m.cmd === '70' && m.id === top, 1, 20_000);
    expect(chatsOf(rec, 'sender')).toEqual(sent);
    ws.ws.close();
    for (const n of file.cluster.nodes)
      expect(n.output()).not.toMatch(/internal error|uncaught|Unhandled/i);
  }, 120_000);
});
