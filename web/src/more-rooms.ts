// The rooms the server has that the page is not in, listed under the joined ones in the sidebar.
import { Cmd } from '../../src/protocol/codes.js';
import { asNumber, asString } from '../../src/protocol/coerce.js';
import type { RoomEntry } from '../../src/protocol/messages.js';
import { moreRooms, moreRoomsTitle, roomName } from './dom.js';
import { findView } from './rooms.js';
import { connection } from './state.js';

/** At most this many rooms the page is not in are listed (those whose names hold what the room box holds). */
const MORE_ROOMS_SHOWN = 30;
/** The rooms of the last ROOMS the page is not in, with their counts, in the server's order. */
let moreRoomEntries: { name: string; userCount: number }[] = [];
/** Focusing the room box asks for the list again at most this often. */
export const MORE_ROOMS_EVERY_MS = 10_000;
export let moreRoomsAskedAt = Number.NEGATIVE_INFINITY;

/**
 * The rooms the server has that this page is not in (ROOMS), under the joined ones, so
 * that the rooms an operator declared are found and joined with a click rather than by
 * guessing their names. Asked once joined, after a part, and when the room box gets focus.
 */
export async function listMoreRooms(): Promise<void> {
  if (!connection.caps.has('rooms')) return;
  moreRoomsAskedAt = performance.now();
  const reply = (await connection.call({ cmd: Cmd.ROOMS }, true)).rooms;
  const entries: unknown[] = Array.isArray(reply) ? reply : [];
  moreRoomEntries = [];
  for (const entry of entries) {
    const r = (typeof entry === 'object' && entry !== null ? entry : {}) as Partial<RoomEntry>;
    const name = asString(r.room);
    if (name === '' || r.joined === true || findView(name) !== undefined) continue;
    moreRoomEntries.push({ name, userCount: asNumber(r.userCount) });
  }
  showMoreRoomEntries();
}

/**
 * The rooms not joined whose names hold what is typed in the room box (all of them when it
 * is empty), MORE_ROOMS_SHOWN at most: with more rooms than that, typing part of a name finds
 * one the list leaves out.
 */
export function showMoreRoomEntries(): void {
  // "#physics", as rooms are written in IRC and in this page's list, looks for "physics".
  const typed = roomName.value.trim().replace(/^#+/, '').toLowerCase();
  const items: HTMLLIElement[] = [];
  for (const { name, userCount } of moreRoomEntries) {
    if (items.length >= MORE_ROOMS_SHOWN) break;
    if (typed !== '' && !name.toLowerCase().includes(typed)) continue;
    items.push(moreRoomItem(name, userCount));
  }
  moreRooms.replaceChildren(...items);
  showMoreRooms();
}

function moreRoomItem(name: string, userCount: number): HTMLLIElement {
  const item = document.createElement('li');
  const join = document.createElement('button');
  join.type = 'button';
  join.className = 'room-button';
  join.dataset.join = name;
  join.title = `Join #${name}`;
  const label = document.createElement('span');
  label.className = 'room-name';
  label.textContent = `# ${name}`;
  const count = document.createElement('span');
  count.className = 'room-count';
  count.textContent = String(userCount);
  count.title = `${userCount} ${userCount === 1 ? 'user' : 'users'}`;
  join.append(label, count);
  item.append(join);
  return item;
}

function showMoreRooms(): void {
  const none = moreRooms.childElementCount === 0;
  moreRooms.hidden = none;
  moreRoomsTitle.hidden = none;
}

/** A room just joined leaves the list of the others. */
export function unlistMoreRoom(room: string): void {
  const folded = room.toLowerCase();
  moreRoomEntries = moreRoomEntries.filter((r) => r.name.toLowerCase() !== folded);
  for (const join of moreRooms.querySelectorAll<HTMLButtonElement>('button[data-join]')) {
    if (join.dataset.join?.toLowerCase() === folded) join.parentElement?.remove();
  }
  showMoreRooms();
}

export function relistMoreRooms(): void {
  listMoreRooms().catch(() => {
    // The connection dropped meanwhile: the list is asked for again once back.
  });
}
