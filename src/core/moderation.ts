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
