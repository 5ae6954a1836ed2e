import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fnv1a32, shardListHash, shardOf } from '../../src/cluster/shards.js';

/** FNV-1a over the bytes Node encodes the string to: what fnv1a32 must match. */
function reference(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) hash = Math.imul(hash ^ byte, 0x01000193);
  return hash >>> 0;
}

/** Any code point, or a lone surrogate half. */
const unit = fc.oneof(
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
  fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)),
);
const key = fc.string({ unit, maxLength: 40 });

describe('shardOf', () => {
  it('hashes with 32-bit FNV-1a of the UTF-8 key (fixed vectors)', () => {
    // The first three are FNV's published test vectors.
    const vectors: [string, number][] = [
      ['', 0x811c9dc5],
      ['a', 0xe40c292c],
      ['foobar', 0xbf9cf968],
      ['lobby', 0x1c5a0ed3],
      ['physics', 0x87231ca2],
      ['général', 0x50bd2eaf],
      ['日本語', 0x805f5ce7],
      ['😀', 0x33a29608],
      // A lone surrogate counts as U+FFFD.
      ['x\ud800y', 0x66b4d003],
    ];
    for (const [key, hash] of vectors) expect([key, fnv1a32(key)]).toEqual([key, hash]);
  });

  it('puts rooms on the same instance in every process and version (fixed vectors)', () => {
    const rooms = ['lobby', 'physics', 'général', '日本語', '😀', 'a', 'foobar'];
    expect(rooms.map((r) => shardOf(r, 1))).toEqual([0, 0, 0, 0, 0, 0, 0]);
    expect(rooms.map((r) => shardOf(r, 2))).toEqual([0, 0, 1, 1, 0, 0, 0]);
    expect(rooms.map((r) => shardOf(r, 3))).toEqual([0, 0, 1, 0, 2, 1, 1]);
  });

  it('keeps the lobby on the --redis instance, whatever the count', () => {
    for (let n = 1; n <= 64; n++) expect(shardOf('lobby', n)).toBe(0);
  });

  it('agrees with FNV-1a of Buffer.from(key) for any string, lone surrogates included', () => {
    fc.assert(
      fc.property(key, fc.integer({ min: 1, max: 64 }), (key, n) => {
        expect(fnv1a32(key)).toBe(reference(key));
        const shard = shardOf(key, n);
        expect(shard).toBeGreaterThanOrEqual(0);
        expect(shard).toBeLessThan(n);
        expect(shard).toBe(key === 'lobby' ? 0 : reference(key) % n);
      }),
      { numRuns: 2000 },
    );
  });

  it('spreads room names over every instance', () => {
    const counts = [0, 0, 0];
    for (let i = 0; i < 300; i++) counts[shardOf(`room${i}`, 3)]!++;
    for (const c of counts) expect(c).toBeGreaterThan(60);
  });
});

describe('shardListHash', () => {
  it('depends on the URLs and their order, not on passwords', () => {
    const a = 'redis://127.0.0.1:7001';
    const b = 'redis://127.0.0.1:7002';
    expect(shardListHash([a, b])).toBe(shardListHash([a, b]));
    expect(shardListHash([a, b])).not.toBe(shardListHash([b, a]));
    expect(shardListHash([a])).not.toBe(shardListHash([a, b]));
    expect(shardListHash([])).not.toBe(shardListHash([a]));
    expect(shardListHash(['redis://:secret@127.0.0.1:7001'])).toBe(shardListHash([a]));
    // The same instance however its URL spells it.
    for (const same of [
      'redis://127.0.0.1:7001/',
      'redis://127.0.0.1:7001/0',
      'redis://u@127.0.0.1:7001?db=0',
    ]) {
      expect([same, shardListHash([same])]).toEqual([same, shardListHash([a])]);
    }
    expect(shardListHash(['redis://LOCALHOST/'])).toBe(shardListHash(['redis://localhost:6379']));
    expect(shardListHash(['redis://127.0.0.1:7001/1'])).not.toBe(shardListHash([a]));
    expect(shardListHash(['redis://127.0.0.1:7001?db=1'])).toBe(shardListHash([`${a}/1`]));
    expect(shardListHash(['rediss://127.0.0.1:7001'])).not.toBe(shardListHash([a]));
  });

  it('is another than that of versions placing the lobby by its hash, where there are shards', () => {
    // Those versions hashed the list of instances alone.
    const listAlone = (named: string[]) =>
      createHash('sha256').update(JSON.stringify(named)).digest('hex').slice(0, 16);
    expect(shardListHash([])).toBe(listAlone([]));
    const a = 'redis://127.0.0.1:7001';
    expect(shardListHash([a])).not.toBe(listAlone([`${a}/0`]));
    expect(shardListHash([a])).toBe(shardListHash([`${a}/0`]));
  });
});
