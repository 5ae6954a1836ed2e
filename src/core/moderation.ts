/**
 * Operators: members who may kick and ban once they have sent OPER with a
 * name and password from the config file. The core never sees a password
 * hash's format: `verify` is the composition root's (scrypt, node:crypto).
 */
export interface Operator {
  readonly name: string;
  /** Compares in constant time; never logs the password. */
  verify(password: string): boolean;
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
