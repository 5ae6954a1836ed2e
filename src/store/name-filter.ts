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

  /**
   * A filter with the names of one `bytes` was made from (its size is its own, whatever
   * size a new one would have now). Throws a RangeError for bytes no filter gave.
   */
  static restore(bytes: Uint8Array): NameFilter {
    const filter = new NameFilter(Math.log2(bytes.length * 8));
    if (LITTLE_ENDIAN) {
      new Uint8Array(filter.bits.buffer).set(bytes);
      return filter;
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < filter.bits.length; i++) filter.bits[i] = view.getUint32(4 * i, true);
    return filter;
  }

  /** Its bits, for `restore`: little-endian whatever the machine, so a file can move. */
  bytes(): Uint8Array {
    if (LITTLE_ENDIAN) return new Uint8Array(this.bits.buffer.slice(0));
    const bytes = new Uint8Array(this.bits.length * 4);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < this.bits.length; i++) view.setUint32(4 * i, this.bits[i]!, true);
    return bytes;
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

/** The machine keeps a Uint32Array's bytes in the order `bytes` gives them (almost all do). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

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

/**
 * log2 of the bits of a filter of forgotten rooms: 64 to 128 a room for the first
 * `maxEmptyRooms` forgotten, at most 1 MiB (at the default 100,000). At 8 bits a room
 * (a million forgotten, at the default) about 2% of rooms never written read as forgotten,
 * and are treated so: their members are told what they missed cannot be recovered.
 */
export function filterBits(maxEmptyRooms: number): number {
  return Math.min(23, Math.max(16, Math.ceil(Math.log2(Math.max(1, maxEmptyRooms) * 64))));
}
