import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NameFilter } from '../../../src/store/name-filter.js';

describe('NameFilter', () => {
  it('holds every name added, whatever the names', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 5, max: 12 }),
        fc.array(fc.string({ unit: 'grapheme', maxLength: 40 }), { maxLength: 300 }),
        (log2Bits, names) => {
          const filter = new NameFilter(log2Bits);
          for (const name of names) filter.add(name);
          for (const name of names) expect(filter.has(name)).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('says "maybe" for few names never added at 8 bits a name', () => {
    const filter = new NameFilter(16);
    for (let i = 0; i < 8_192; i++) filter.add(`room-${i}`);
    let maybe = 0;
    for (let i = 0; i < 10_000; i++) if (filter.has(`other-${i}`)) maybe++;
    // Four probes at 8 bits a name: about 2.4% in theory.
    expect(maybe).toBeLessThan(400);
    expect(new NameFilter(16).has('room-1')).toBe(false);
  });

  it('is restored from its bytes with every name added, and no other bits', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 5, max: 12 }),
        fc.array(fc.string({ maxLength: 20 }), { maxLength: 100 }),
        fc.array(fc.string({ maxLength: 20 }), { maxLength: 100 }),
        (log2Bits, names, others) => {
          const filter = new NameFilter(log2Bits);
          for (const name of names) filter.add(name);
          const bytes = filter.bytes();
          expect(bytes.length).toBe(2 ** log2Bits / 8);
          const restored = NameFilter.restore(bytes);
          for (const name of [...names, ...others]) {
            expect(restored.has(name)).toBe(filter.has(name));
          }
          expect(restored.bytes()).toEqual(bytes);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('refuses bytes no filter gave', () => {
    for (const length of [0, 2, 12, 100]) {
      expect(() => NameFilter.restore(new Uint8Array(length))).toThrow(RangeError);
    }
  });

  it('refuses a size it cannot hold', () => {
    for (const bits of [4, 31, 7.5, Number.NaN]) {
      expect(() => new NameFilter(bits)).toThrow(RangeError);
    }
  });
});
