/**
 * Nickname rules. Nicknames are stored in Unicode NFC and compared
 * case-insensitively, so "Ann" and "ann" cannot both be in the room and
 * nobody can pass for someone else with a look-alike composed form.
 */
export const MAX_NICKNAME_LENGTH = 32;

// Whitespace, control and format characters (including zero-width joiners) are
// refused: they make names that print identically or break line-based clients.
const FORBIDDEN = /[\s\p{Cc}\p{Cf}\p{Zs}\p{Zl}\p{Zp}]/u;

export type NicknameCheck = { ok: true; nickname: string } | { ok: false; reason: string };

export function checkNickname(raw: string): NicknameCheck {
  const nickname = raw.normalize('NFC');
  if (nickname.length === 0) return { ok: false, reason: 'nickname must not be empty' };
  const length = [...nickname].length;
  if (length > MAX_NICKNAME_LENGTH) {
    return { ok: false, reason: `nickname is longer than ${MAX_NICKNAME_LENGTH} characters` };
  }
  if (FORBIDDEN.test(nickname)) {
    return { ok: false, reason: 'nickname must not contain spaces or control characters' };
  }
  return { ok: true, nickname };
}

/** The key under which a nickname is unique. */
export function nicknameKey(nickname: string): string {
  return nickname.normalize('NFC').toLowerCase();
}
