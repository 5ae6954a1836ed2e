/**
 * A join on a cluster reads its room's members after its own claim
 * (MemberLists.fresh). Joins into one room share those reads: while one is on
 * its way, those that ask wait for the next, which all of them share. Each
 * caller still gets a read that started after it asked.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemberLists } from '../../../src/core/member-lists.js';
import type { PresenceMember } from '../../../src/core/presence.js';

/** A read Presence has not answered yet; `version` is what Presence held when it started. */
interface Read {
  readonly key: string;
  readonly version: number;
  resolve(): void;
  reject(): void;
}

/** MemberLists over a Presence whose reads the test answers, one by one. */
function lists() {
  const reads: Read[] = [];
  const state = { version: 0 };
  const member = (version: number): PresenceMember => ({
    node: 'n',
    id: `v${version}`,
    nickname: `v${version}`,
    address: { ip: '127.0.0.1', port: 1 },
  });
  const memberLists = new MemberLists(
    (key) =>
      new Promise((resolve, reject) => {
        const version = state.version;
        reads.push({
          key,
          version,
          resolve: () => resolve([member(version)]),
          reject: () => reject(new Error('Redis went away')),
        });
      }),
    () => 0,
  );
  return { memberLists, reads, state };
}

const turn = () => new Promise<void>((r) => setImmediate(r));

describe('fresh member reads of a room', () => {
  it('asked while one is on its way: one more read, shared, that starts after it', async () => {
    const { memberLists, reads, state } = lists();
    const first = memberLists.fresh('r');
    state.version = 1;
    const later = [memberLists.fresh('r'), memberLists.fresh('r'), memberLists.fresh('r')];
    await turn();
    expect(reads).toHaveLength(1);
    reads[0]!.resolve();
    expect((await first)[0]!.nickname).toBe('v0');
    await turn();
    expect(reads).toHaveLength(2);
    expect(reads[1]!.version).toBe(1);
    reads[1]!.resolve();
    for (const list of await Promise.all(later)) expect(list[0]!.nickname).toBe('v1');
    // Nothing on its way: the next one starts at once.
    state.version = 2;
    const next = memberLists.fresh('r');
    expect(reads).toHaveLength(3);
    reads[2]!.resolve();
    expect((await next)[0]!.nickname).toBe('v2');
  });

  it('rooms are read apart', async () => {
    const { memberLists, reads } = lists();
    const a = memberLists.fresh('a');
    const b = memberLists.fresh('b');
    expect(reads.map((r) => r.key)).toEqual(['a', 'b']);
    for (const read of reads) read.resolve();
    await Promise.all([a, b]);
  });

  it('a failed read fails those that shared it; those queued behind it get a read of their own', async () => {
    const { memberLists, reads, state } = lists();
    const first = memberLists.fresh('r');
    const alsoFirst = first.catch((err: Error) => err.message);
    state.version = 1;
    const queued = memberLists.fresh('r');
    reads[0]!.reject();
    expect(await alsoFirst).toBe('Redis went away');
    await turn();
    expect(reads).toHaveLength(2);
    reads[1]!.resolve();
    expect((await queued)[0]!.nickname).toBe('v1');
  });

  it('every caller gets a read that started after it asked, whatever the interleaving', async () => {
    type Step = { kind: 'ask' | 'change' | 'answer' | 'fail'; room: number };
    const step = fc.record({
      kind: fc.constantFrom<Step['kind']>('ask', 'ask', 'change', 'answer', 'fail'),
      room: fc.integer({ min: 0, max: 2 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(step, { maxLength: 60 }), async (steps) => {
        const { memberLists, reads, state } = lists();
        const asked: { version: number; list: Promise<readonly PresenceMember[] | 'failed'> }[] =
          [];
        const settle = async (ok: boolean, room: number) => {
          const read = reads.find((r) => r.key === `r${room}`);
          if (read === undefined) return;
          reads.splice(reads.indexOf(read), 1);
          if (ok) read.resolve();
          else read.reject();
          await turn();
        };
        for (const { kind, room } of steps) {
          if (kind === 'ask') {
            const list = memberLists.fresh(`r${room}`).catch(() => 'failed' as const);
            asked.push({ version: state.version, list });
          } else if (kind === 'change') state.version++;
          else await settle(kind === 'answer', room);
          // At most one read of a room on its way.
          const rooms = reads.map((r) => r.key);
          expect(new Set(rooms).size).toBe(rooms.length);
        }
        // Answer whatever is left, queued reads included.
        for (let i = 0; i < 200 && reads.length > 0; i++)
          await settle(true, Number(reads[0]!.key.slice(1)));
        expect(reads).toHaveLength(0);
        for (const { version, list } of asked) {
          const got = await list;
          if (got !== 'failed')
            expect(Number(got[0]!.nickname.slice(1))).toBeGreaterThanOrEqual(version);
        }
      }),
      { numRuns: 200 },
    );
  });
});
