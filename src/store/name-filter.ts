/**
 * A Bloom filter of strings: `has` is false only for a name never added, and true
 * for every name added (and, rarely, for one that was not). Fixed in size, so it
 * answers "maybe" more often the more names it holds; a caller must treat "maybe"
 * as the cautious answer.
 */
export class NameFilter {
  private readonly bits: Uint32Array;
  private readonly mask: number;

  /** `log2Bits`: the filter holds 2^log2Bits bits (between 2^5 and 2^30). */
  constructor(log2Bits: number) {
    if (!Number.isInteger(log2Bits) || log2Bits < 5 || log2Bits > 30) {
      throw new RangeError(`log2Bits must be an integer from 5 to 30, not ${log2Bits}`);
    }
    this.bits = new Uint32Array(2 ** (log2Bits - 5));
    this.mask = 2 ** log2Bits - 1;
  }

  add(name: string): void {
    const [h1, h2] = hashes(name);
    for (let i = 0; i < PROBES; i++) {
      const bit = (h1 + Math.imul(i, h2)) & this.mask;
      this.bits[bit >>> 5]! |= 1 << (bit & 31);
    }
  }

  has(name: string): boolean {
    const [h1, h2] = hashes(name);
    for (let i = 0; i < PROBES; i++) {
      const bit = (h1 + Math.imul(i, h2)) & this.mask;
      if ((this.bits[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }
}

/** Bits set per name: with 8 bits a name, about 2% of absent names read as present. */
const PROBES = 4;

/**
 * Two 32-bit hashes of the UTF-16 code units with different multipliers (FNV-1a's
 * and MurmurHash's); the probes are h1 + i·h2 (Kirsch and Mitzenmacher), h2 odd so
 * that they differ.
 */
function hashes(name: string): [number, number] {
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  return [h1 >>> 0, (h2 | 1) >>> 0];
}
