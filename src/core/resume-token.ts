/**
 * Resume tokens (docs/protocol.md, "Taking a session back") and the session's
 * lasting identity they carry (MessageDraft.sender).
 *
 * A token is the session's sender followed by a secret, both base64url: a
 * resume on any node of a cluster reads the sender from the token it was
 * given, so a session that moves keeps its identity without Presence handing
 * it over, and a token that takes nothing back any more (spent, or from before
 * a restart) still names the session its client re-sends chats for, unless a
 * session of this process holds that sender, or on a cluster a member of any
 * node (Presence.grant refuses it): a spent token of a live session names nobody.
 * Only the whole token takes a session back; no other client
 * ever sees it, and the history stores keep only a hash of it (store/common.ts).
 */

/** 72 random bits: senders are never compared across more than a room's stored cids. */
const SENDER_BYTES = 9;
/** 144 random bits, as tokens had before they carried a sender. */
const SECRET_BYTES = 18;
const SENDER_LENGTH = (SENDER_BYTES * 4) / 3;
const TOKEN = new RegExp(`^[A-Za-z0-9_-]{${SENDER_LENGTH + (SECRET_BYTES * 4) / 3}}$`);

function randomText(bytes: number): string {
  const buffer = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(buffer);
  return Buffer.from(buffer).toString('base64url');
}

export function newSender(): string {
  return randomText(SENDER_BYTES);
}

export function newToken(sender: string): string {
  return sender + randomText(SECRET_BYTES);
}

/** The sender a token of this form carries; undefined for any other string. */
export function senderOf(token: string): string | undefined {
  return TOKEN.test(token) ? token.slice(0, SENDER_LENGTH) : undefined;
}
