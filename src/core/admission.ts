import { addressGroup } from './bans.js';

/**
 * The connection caps (--max-conns, --max-conns-per-ip), counted per raw
 * socket at accept time by every listener: a TLS handshake, an HTTP request
 * or a WebSocket that has not sent CONNECT yet holds a descriptor and memory
 * just as a session does, so it has to count from its first moment.
 */
export class Admission {
  private total = 0;
  /** Open connections per address: an IPv4 address, or an IPv6 /64 (see addressGroup). */
  private readonly perIp = new Map<string, number>();

  /**
   * @param maxTotal open connections in total
   * @param maxPerIp open connections from one address (0 = unlimited)
   * @param refused told about each connection turned away
   */
  constructor(
    private maxTotal: number,
    private maxPerIp: number,
    private readonly refused: (ip: string, fromIp: number, total: number) => void = () => {},
  ) {}

  /** Connections counted now. */
  get open(): number {
    return this.total;
  }

  /** Whether the address is banned (set by Chat from its ban list); checked before the caps. */
  banned: (ip: string) => boolean = () => false;

  /** Counts a new connection from `ip` if the caps allow it; pair each `true` with one release(ip). */
  tryOpen(ip: string): boolean {
    // One host has a whole IPv6 /64: per address, it could open the cap 2^64 times over.
    const key = addressGroup(ip);
    const fromIp = (this.perIp.get(key) ?? 0) + 1;
    if (this.total + 1 > this.maxTotal || (this.maxPerIp > 0 && fromIp > this.maxPerIp)) {
      this.refused(ip, fromIp, this.total + 1);
      return false;
    }
    this.total++;
    this.perIp.set(key, fromIp);
    return true;
  }

  /**
   * Whether addresses are told apart at all: with no cap per address (--max-conns-per-ip 0,
   * as behind a proxy all clients share one), nothing else is counted per address either.
   */
  get perAddress(): boolean {
    return this.maxPerIp > 0;
  }

  /** Connections one address may hold at once (--max-conns-per-ip; 0 for no cap). */
  get perAddressCap(): number {
    return this.maxPerIp;
  }

  /** New caps apply to connections accepted from now on; open ones stay. */
  setCaps(maxTotal: number | undefined, maxPerIp: number | undefined): void {
    if (maxTotal !== undefined) this.maxTotal = maxTotal;
    if (maxPerIp !== undefined) this.maxPerIp = maxPerIp;
  }

  release(ip: string): void {
    const key = addressGroup(ip);
    const fromIp = this.perIp.get(key);
    // A release without its tryOpen would let the next caller past the cap.
    if (fromIp === undefined) return;
    this.total--;
    if (fromIp <= 1) this.perIp.delete(key);
    else this.perIp.set(key, fromIp - 1);
  }
}
