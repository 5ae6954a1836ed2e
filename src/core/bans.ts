/**
 * Bans: by nickname (its look-alike key, the rule nickname uniqueness uses)
 * or by address (an IPv4 or IPv6 address or CIDR block). Addresses are
 * compared as 128-bit IPv6 numbers, IPv4 as its mapped form ::ffff:a.b.c.d,
 * so an IPv4 block also catches a dual-stack listener's ::ffff: clients.
 * Pure: the file they persist in is a BanStore's business (src/store/).
 */
import { type AddressMatcher, parseAddressMask, parseIp, prefix } from './addresses.js';
import { nicknameKey } from './nickname.js';

export { addressGroup, parseAddressMask, parseIp } from './addresses.js';

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
export type Matcher = AddressMatcher | { readonly kind: 'nickname'; readonly key: string };

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

/**
 * The time at which every ban is in force, timed or not: what bans are judged by while the
 * time is not known (BanList), and a ban as it is made (enforceBan).
 */
export const ANY_TIME = Number.NEGATIVE_INFINITY;

/** Whether `ban`, in force at `now`, matches a member with this nickname or address. */
export function banMatches(ban: Ban, nickname: string, ip: string, now: number): boolean {
  if (!live(ban, now)) return false;
  const matcher = parseMask(ban.mask);
  if (matcher.kind === 'nickname') return matcher.key === nicknameMaskKey(nickname);
  const n = parseIp(ip);
  return n !== undefined && covers(matcher, n);
}

/** A change to the list: `failure` is the store's error when it could not write it. */
export interface Saved {
  failure?: unknown;
}

/**
 * The ban list. Expired bans stop matching by themselves and are dropped at
 * the next change, which is when the list is written. While `timeKnown` says the clock
 * cannot be trusted (a node of a cluster that has not read Redis's time), no timed ban
 * counts as ended: the clock may be far ahead.
 */
export class BanList {
  private bans: { ban: Ban; matcher: Matcher }[] = [];

  constructor(
    private readonly store: BanStore,
    bans: readonly Ban[] = store.load(),
    private readonly timeKnown: () => boolean = () => true,
  ) {
    for (const ban of bans) this.bans.push({ ban, matcher: parseMask(ban.mask) });
  }

  /** The time bans are judged by: `now`, or none at all while it is not known. */
  private at(now: number): number {
    return this.timeKnown() ? now : ANY_TIME;
  }

  /** The bans in force, oldest first. */
  list(at: number): Ban[] {
    const now = this.at(at);
    return this.bans.filter((b) => live(b.ban, now)).map((b) => b.ban);
  }

  /** Whether an address is banned (v4, v6 or v4-mapped v6). */
  bansAddress(ip: string, at: number): Ban | undefined {
    // Asked for every accepted connection: with no bans there is no address to parse.
    if (this.bans.length === 0) return undefined;
    const now = this.at(at);
    const n = parseIp(ip);
    if (n === undefined) return undefined;
    for (const { ban, matcher } of this.bans) {
      if (covers(matcher, n) && live(ban, now)) return ban;
    }
    return undefined;
  }

  /** Whether a nickname, or any look-alike of it, is banned. */
  bansNickname(nickname: string, at: number): Ban | undefined {
    const now = this.at(at);
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
  adds(mask: string, at: number): boolean {
    const now = this.at(at);
    const key = parseMask(mask).key;
    return !this.bans.some((b) => b.matcher.key === key && live(b.ban, now));
  }

  /**
   * Adds a ban (or replaces the one on the same mask) and saves the list; the ban is in
   * force whether or not the store could write it (see Saved).
   */
  add(ban: Ban, at: number): Saved {
    const now = this.at(at);
    const matcher = parseMask(ban.mask);
    this.bans = this.bans.filter((b) => live(b.ban, now) && b.matcher.key !== matcher.key);
    this.bans.push({ ban, matcher });
    return this.save();
  }

  /** Removes the ban on this mask (any spelling of it); `found` false if there was none. */
  remove(mask: string, at: number): Saved & { found: boolean } {
    const now = this.at(at);
    const key = parseMask(mask.trim()).key;
    const before = this.bans.length;
    const kept = this.bans.filter((b) => b.matcher.key !== key);
    const found = kept.length !== before;
    this.bans = kept.filter((b) => live(b.ban, now));
    return { found, ...this.save() };
  }

  private save(): Saved {
    try {
      this.store.save(this.bans.map((b) => b.ban));
      return {};
    } catch (err) {
      return { failure: err };
    }
  }
}
