/**
 * Capability negotiation. A client lists what it understands in CONNECT
 * ({"cmd":"0","nickname":"ann","caps":["errors","renames"]}); the "03" reply
 * echoes the subset the server granted. A client that sends no "caps" gets the
 * course protocol exactly, and never a code it does not know.
 */
export const CAPABILITIES = [
  /** "90" error replies instead of silence (or the nearest course code). */
  'errors',
  /** "91" when another member renames. */
  'renames',
  /** Whispers arrive as "70" with "whisper": true, so they can be told from chat. */
  'whispers',
  /** "99" notices when a member is kicked or banned (the 92-98 requests need only "caps"). */
  'moderation',
  /** Rooms besides the lobby: "100"-"105", and events that name their room. */
  'rooms',
  /** With "rooms": stored history, "71", "106"/"107", resume tokens and recovery. */
  'history',
  /**
   * CHAT's "action": true (IRC's /me), and "action": true on such chat. A client without
   * it gets the text between asterisks ("*waves*").
   */
  'actions',
] as const;

export type Capability = (typeof CAPABILITIES)[number];

/** The capabilities the server grants for a requested list, in the server's order. */
export function grant(requested: readonly string[]): Capability[] {
  const asked = new Set(requested);
  // History names rooms in everything it carries, so it comes only with rooms.
  if (!asked.has('rooms')) asked.delete('history');
  return CAPABILITIES.filter((c) => asked.has(c));
}
