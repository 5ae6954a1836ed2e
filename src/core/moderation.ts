/**
 * Operators: members who may kick and ban once they have sent OPER with a
 * name and password from the config file. The core never sees a password
 * hash's format: `verify` is the composition root's (scrypt, node:crypto).
 */
import { formatDuration } from '../protocol/slash-commands.js';
import { setNewest } from './newest.js';

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

/** How long a removed session's token is answered with its removal: a reconnect comes in seconds. */
export const REMOVAL_REMEMBERED_MS = 10 * 60_000;
/** Removals remembered at most, the oldest forgotten first. */
const REMOVALS_REMEMBERED = 1_000;

/** A KICK or BAN that removed a session, as its member was told it ("90" 2005 or 2006). */
export interface Removal {
  readonly action: 'kick' | 'ban';
  readonly detail: string;
}

/**
 * Resume tokens of sessions a KICK or BAN removed, with what each was told. A client whose
 * connection was already dead (half-open after a Wi-Fi change) never read its "90"; its
 * reconnect, the token spent, would come back as a new session and rejoin its rooms (a ban
 * stops it only from the banned address or name, and while it lasts). Its CONNECT is
 * answered with the removal instead, once.
 */
export class RecentRemovals {
  private readonly removals = new Map<string, Removal & { at: number }>();

  remember(token: string, removal: Removal, now: number): void {
    setNewest(this.removals, token, { ...removal, at: now }, REMOVALS_REMEMBERED);
  }

  /** What removed the session `token` resumed, if lately; only the first time asked. */
  take(token: string, now: number): Removal | undefined {
    const removal = this.removals.get(token);
    if (removal === undefined) return undefined;
    this.removals.delete(token);
    if (now - removal.at > REMOVAL_REMEMBERED_MS) return undefined;
    return { action: removal.action, detail: removal.detail };
  }
}

/** How a session a KICK or BAN removed ends: its close's reason, and its detail's verb. */
export function removedAs(action: Removal['action']): 'kicked' | 'banned' {
  return action === 'kick' ? 'kicked' : 'banned';
}

/** What the kicked or banned member is told, and the log says; `seconds`: a ban's length. */
export function removalDetail(
  action: Removal['action'],
  by: string,
  reason: string,
  seconds: number | undefined,
): string {
  const span = seconds === undefined ? '' : ` for ${formatDuration(seconds)}`;
  return `${removedAs(action)} by ${by}${span}${reason === '' ? '' : `: ${reason}`}`;
}
