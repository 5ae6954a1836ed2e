/**
 * IP addresses and CIDR blocks as the server reads them: for bans (bans.ts), for budgets kept
 * per client address, and to keep nicknames from reading as addresses (nickname.ts).
 * Addresses are 128-bit IPv6 numbers, IPv4 as its mapped form ::ffff:a.b.c.d.
 */

/** An address block. */
export interface AddressMatcher {
  readonly kind: 'address';
  readonly base: bigint;
  readonly bits: number;
  readonly key: string;
}

const V4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function parseV4(text: string): bigint | undefined {
  const m = V4.exec(text);
  if (m === null) return undefined;
  let n = 0n;
  for (let i = 1; i <= 4; i++) {
    const part = m[i]!;
    // "010" is octal to some parsers and decimal to others: refuse it.
    if (part.length > 1 && part.startsWith('0')) return undefined;
    const byte = Number(part);
    if (byte > 255) return undefined;
    n = (n << 8n) | BigInt(byte);
  }
  return n;
}

const MAPPED = 0xffffn << 32n;

function parseV6(text: string): bigint | undefined {
  const zone = text.indexOf('%');
  const body = zone >= 0 ? text.slice(0, zone) : text;
  if (!/^[0-9a-fA-F:.]+$/.test(body)) return undefined;
  const halves = body.split('::');
  if (halves.length > 2) return undefined;
  const groups = (half: string): number[] | undefined => {
    if (half === '') return [];
    const out: number[] = [];
    const parts = half.split(':');
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      if (i === parts.length - 1 && part.includes('.')) {
        const v4 = parseV4(part);
        if (v4 === undefined) return undefined;
        out.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      } else if (/^[0-9a-fA-F]{1,4}$/.test(part)) {
        out.push(Number.parseInt(part, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (head === undefined || tail === undefined) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  let n = 0n;
  for (const g of [...head, ...new Array<number>(missing).fill(0), ...tail]) {
    n = (n << 16n) | BigInt(g);
  }
  return n;
}

/** An IP address as a 128-bit number (IPv4 mapped into IPv6), or undefined if it is not one. */
export function parseIp(text: string): bigint | undefined {
  const v4 = parseV4(text);
  if (v4 !== undefined) return MAPPED | v4;
  return text.includes(':') ? parseV6(text) : undefined;
}

/** The well-known NAT64 prefix 64:ff9b::/96, shifted down past its IPv4 part. */
const NAT64_PREFIX = 0x64ff9bn << 64n;

/**
 * Who an address is, for a budget kept per client: an IPv4 address (mapped,
 * translated by NAT64, or neither) is itself, dotted, an IPv6 address its /64, which one host or LAN is
 * given whole, so that it cannot take a fresh budget from each of its 2^64
 * addresses. Text that is no address is itself.
 */
export function addressGroup(ip: string): string {
  // Node writes IPv4 peers dotted: themselves already, without parsing on every accept. A
  // link-local peer with its zone (fe80::1%eth0) is one neighbour on one link: itself too.
  if (!ip.includes(':') || ip.includes('%')) return ip;
  const n = parseIp(ip);
  if (n === undefined) return ip;
  // Mapped (::ffff:0:0/96), or translated by NAT64 (64:ff9b::/96): an IPv4 client.
  if (n >> 32n === 0xffffn || n >> 32n === NAT64_PREFIX) {
    const v4 = Number(n & 0xffffffffn);
    return `${v4 >>> 24}.${(v4 >>> 16) & 255}.${(v4 >>> 8) & 255}.${v4 & 255}`;
  }
  return `v6:${n >> 64n}/64`;
}

export function prefix(bits: number): bigint {
  return bits === 0 ? 0n : ((1n << BigInt(bits)) - 1n) << BigInt(128 - bits);
}

/**
 * An address or CIDR mask, or undefined if the text is neither (then it is a
 * nickname). An IPv4 "/n" counts from the IPv4 address's first bit.
 */
export function parseAddressMask(text: string): AddressMatcher | undefined {
  const slash = text.indexOf('/');
  const ipText = slash >= 0 ? text.slice(0, slash) : text;
  const ip = parseIp(ipText);
  if (ip === undefined) return undefined;
  const isV4 = parseV4(ipText) !== undefined;
  let bits = 128;
  if (slash >= 0) {
    const len = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(len)) return undefined;
    const n = Number(len);
    if (n > (isV4 ? 32 : 128)) return undefined;
    bits = isV4 ? 96 + n : n;
  }
  const base = ip & prefix(bits);
  return { kind: 'address', base, bits, key: `a:${base.toString(16)}/${bits}` };
}
