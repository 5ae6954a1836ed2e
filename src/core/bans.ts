/**
 * Bans: by nickname (its look-alike key, the rule nickname uniqueness uses)
 * or by address (an IPv4 or IPv6 address or CIDR block). Addresses are
 * compared as 128-bit IPv6 numbers, IPv4 as its mapped form ::ffff:a.b.c.d,
 * so an IPv4 block also catches a dual-stack listener's ::ffff: clients.
 * Pure: the file they persist in is a BanStore's business (src/store/).
 */
import { nicknameKey } from './nickname.js';

export interface Ban {
  /** As the operator typed it (trimmed); UNBAN takes the same text, or any spelling of it. */
  readonly mask: string;
  readonly by: string;
  readonly reason: string;
  /** ms since the epoch; null lasts until unbanned. */
  readonly expires: number | null;
}

/** Where bans are kept between runs; the core calls it on every change. */
export interface BanStore {
  load(): readonly Ban[];
  /** The whole list, after each change. May throw; the list in memory stays in force. */
  save(bans: readonly Ban[]): void;
}

export class MemoryBanStore implements BanStore {
  bans: readonly Ban[];
  saves = 0;
  constructor(bans: readonly Ban[] = []) {
    this.bans = bans;
  }
  load(): readonly Ban[] {
    return this.bans;
  }
  save(bans: readonly Ban[]): void {
    this.bans = [...bans];
    this.saves++;
  }
}

/** A parsed mask: an address block, or a nickname's look-alike key. */
export type Matcher =
  | { readonly kind: 'address'; readonly base: bigint; readonly bits: number; readonly key: string }
  | { readonly kind: 'nickname'; readonly key: string };

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

function prefix(bits: number): bigint {
  return bits === 0 ? 0n : ((1n << BigInt(bits)) - 1n) << BigInt(128 - bits);
}

/**
 * An address or CIDR mask, or undefined if the text is neither (then it is a
 * nickname). An IPv4 "/n" counts from the IPv4 address's first bit.
 */
export function parseAddressMask(text: string): Matcher | undefined {
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

/** A nickname mask's key: a nickname and its look-alikes have one. */
function nicknameMaskKey(nickname: string): string {
  return `n:${nicknameKey(nickname)}`;
}

export function parseMask(mask: string): Matcher {
  return parseAddressMask(mask) ?? { kind: 'nickname', key: nicknameMaskKey(mask) };
}

/** Whether an address mask covers `ip` (a parsed address). */
function covers(matcher: Matcher, ip: bigint): boolean {
  return matcher.kind === 'address' && (ip & prefix(matcher.bits)) === matcher.base;
}

function live(ban: Ban, now: number): boolean {
  return ban.expires === null || ban.expires > now;
}

/** Whether `ban`, in force at `now`, matches a member with this nickname or address. */
export function banMatches(ban: Ban, nickname: string, ip: string, now: number): boolean {
  if (!live(ban, now)) return false;
  const matcher = parseMask(ban.mask);
  if (matcher.kind === 'nickname') return matcher.key === nicknameMaskKey(nickname);
  const n = parseIp(ip);
  return n !== undefined && covers(matcher, n);
}

/**
 * The ban list. Expired bans stop matching by themselves and are dropped at
 * the next change, which is when the list is written.
 */
export class BanList {
  private bans: { ban: Ban; matcher: Matcher }[] = [];

  constructor(
    private readonly store: BanStore,
    bans: readonly Ban[] = store.load(),
  ) {
    for (const ban of bans) this.bans.push({ ban, matcher: parseMask(ban.mask) });
  }

  /** The bans in force, oldest first. */
  list(now: number): Ban[] {
    return this.bans.filter((b) => live(b.ban, now)).map((b) => b.ban);
  }

  /** Whether an address is banned (v4, v6 or v4-mapped v6). */
  bansAddress(ip: string, now: number): Ban | undefined {
    // Asked for every accepted connection: with no bans there is no address to parse.
    if (this.bans.length === 0) return undefined;
    const n = parseIp(ip);
    if (n === undefined) return undefined;
    for (const { ban, matcher } of this.bans) {
      if (covers(matcher, n) && live(ban, now)) return ban;
    }
    return undefined;
  }

  /** Whether a nickname, or any look-alike of it, is banned. */
  bansNickname(nickname: string, now: number): Ban | undefined {
    const key = nicknameMaskKey(nickname);
    for (const { ban, matcher } of this.bans) {
      if (matcher.kind === 'nickname' && live(ban, now) && matcher.key === key) return ban;
    }
    return undefined;
  }

  /** Takes `bans` as the whole list (a cluster's shared one), without saving. */
  replace(bans: readonly Ban[]): void {
    this.bans = bans.map((ban) => ({ ban, matcher: parseMask(ban.mask) }));
  }

  /** Whether a ban on `mask` would be one more in force, not replace one (any spelling of it). */
  adds(mask: string, now: number): boolean {
    const key = parseMask(mask).key;
    return !this.bans.some((b) => b.matcher.key === key && live(b.ban, now));
  }

  /** Adds (or replaces the ban on the same mask) and saves. */
  add(ban: Ban, now: number): void {
    const matcher = parseMask(ban.mask);
    this.bans = this.bans.filter((b) => live(b.ban, now) && b.matcher.key !== matcher.key);
    this.bans.push({ ban, matcher });
    this.save();
  }

  /** Removes the ban on this mask (any spelling of it); false if there was none. */
  remove(mask: string, now: number): boolean {
    const key = parseMask(mask.trim()).key;
    const before = this.bans.length;
    const kept = this.bans.filter((b) => b.matcher.key !== key);
    const found = kept.length !== before;
    this.bans = kept.filter((b) => live(b.ban, now));
    this.save();
    return found;
  }

  private save(): void {
    this.store.save(this.bans.map((b) => b.ban));
  }
}
