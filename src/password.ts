/**
 * Operator passwords: scrypt (node:crypto) with a random salt, stored as
 * `scrypt$N$r$p$<salt b64>$<hash b64>` in the config file, so that the file
 * never holds a password and the cost can be raised without breaking old hashes.
 */
import { randomBytes, scryptSync, timingSafeEqual } from 'node:crypto';

const N = 16384;
const R = 8;
const P = 1;
const KEY_LENGTH = 32;
/**
 * The longest password hashed, in UTF-16 units. A password is brought to NFC
 * first, which reorders a run of combining marks in time by the square of its
 * length (a 60 KB OPER held the event loop some 700 ms); a longer one is
 * wrong without being looked at.
 */
export const MAX_PASSWORD_LENGTH = 1024;
const FORMAT = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/;

export function hashPassword(password: string): string {
  if (password.length > MAX_PASSWORD_LENGTH) {
    throw new RangeError(`a password is at most ${MAX_PASSWORD_LENGTH} characters`);
  }
  const salt = randomBytes(16);
  const hash = scryptSync(password.normalize('NFC'), salt, KEY_LENGTH, { N, r: R, p: P });
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

/** Why a stored hash cannot be used, or undefined if it can. */
export function checkHash(stored: string): string | undefined {
  const m = FORMAT.exec(stored);
  if (m === null) return 'expected a hash from "confab hash-password" (scrypt$N$r$p$salt$hash)';
  const [n, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  // Bounds that keep one OPER from costing more than about 128 MiB or seconds of CPU.
  if (n < 2 || n > 1 << 20 || (n & (n - 1)) !== 0) return 'N must be a power of two up to 2^20';
  if (r < 1 || r > 32 || p < 1 || p > 16 || 128 * n * r > 256 * 1024 * 1024)
    return 'r or p is out of range';
  if (Buffer.from(m[5]!, 'base64').length < 16) return 'the hash is too short';
  return undefined;
}

/** Compares in constant time; false for a malformed hash. */
export function verifyPassword(password: string, stored: string): boolean {
  if (password.length > MAX_PASSWORD_LENGTH) return false;
  const m = FORMAT.exec(stored);
  if (m === null || checkHash(stored) !== undefined) return false;
  const expected = Buffer.from(m[5]!, 'base64');
  const actual = scryptSync(
    password.normalize('NFC'),
    Buffer.from(m[4]!, 'base64'),
    expected.length,
    {
      N: Number(m[1]),
      r: Number(m[2]),
      p: Number(m[3]),
      maxmem: 512 * 1024 * 1024,
    },
  );
  return timingSafeEqual(actual, expected);
}
