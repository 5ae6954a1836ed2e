/**
 * Operators: members who may kick and ban once they have sent OPER with a
 * name and password from the config file. The core never sees a password
 * hash's format: `verify` is the composition root's (scrypt, node:crypto).
 */
export interface Operator {
  readonly name: string;
  /** Compares in constant time; never logs the password. */
  verify(password: string): boolean;
  /**
   * Changes when the operator's password does (none: the name alone). A status proved under
   * one key ends at the reload that changes it, and a resume on any node brings back only a
   * status whose key the node still lists: a leaked password, replaced, grants nothing more.
   */
  readonly key?: string;
}

/** What an operator's status is proved under: see Operator.key. */
export function operatorKey(operator: Operator): string {
  return operator.key ?? operator.name;
}

/** The operator of `operators` whose status is proved under `key`, if it is still listed. */
export function operatorByKey(operators: readonly Operator[], key: string): Operator | undefined {
  return operators.find((o) => operatorKey(o) === key);
}

/** How long a kicked session's token is answered with its kick: a reconnect comes in seconds. */
const KICK_REMEMBERED_MS = 10 * 60_000;
/** Kicks remembered at most, the oldest forgotten first. */
const KICKS_REMEMBERED = 1_000;

/**
 * Resume tokens of sessions a KICK removed, with what each was told. A client whose
 * connection was already dead (half-open after a Wi-Fi change) never read its "90" 2005;
 * its reconnect, the token spent, would come back as a new session and rejoin its rooms.
 * Its CONNECT is answered with the kick instead, once.
 */
export class RecentKicks {
  private readonly kicks = new Map<string, { detail: string; at: number }>();

  remember(token: string, detail: string, now: number): void {
    this.kicks.delete(token);
    this.kicks.set(token, { detail, at: now });
    if (this.kicks.size > KICKS_REMEMBERED) {
      const oldest = this.kicks.keys().next();
      if (oldest.done !== true) this.kicks.delete(oldest.value);
    }
  }

  /** What the session `token` resumed was kicked with, if lately; only the first time asked. */
  take(token: string, now: number): string | undefined {
    const kick = this.kicks.get(token);
    if (kick === undefined) return undefined;
    this.kicks.delete(token);
    return now - kick.at <= KICK_REMEMBERED_MS ? kick.detail : undefined;
  }
}

/** What the kicked or banned member is told, and the log says. */
export function removalDetail(
  action: 'kick' | 'ban',
  by: string,
  reason: string,
  duration: string | undefined,
): string {
  const what = action === 'kick' ? 'kicked' : 'banned';
  const span = duration === undefined ? '' : ` for ${duration}`;
  return `${what} by ${by}${span}${reason === '' ? '' : `: ${reason}`}`;
}
