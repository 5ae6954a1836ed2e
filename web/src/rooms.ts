// The rooms the page is in: each view's entry in the sidebar, which one is selected, finding a
// view by name, notices and errors (into the selected view unless told), members joining and
// leaving, and older history loaded as the reader scrolls to the top.
import { Cmd, LOBBY } from '../../src/protocol/codes.js';
import { asString } from '../../src/protocol/coerce.js';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import type { HistoryEntry, Request } from '../../src/protocol/messages.js';
import { RequestError } from './connection.js';
import { composer, input, lobbyList, roomList, roomTitle } from './dom.js';
import { chatLine, line, markPast } from './lines.js';
import { renderMembers } from './members.js';
import { connection } from './state.js';
import { append, atBottom, countIn, type RoomView, unsettled, views } from './views.js';

const HISTORY_PAGE = 50;
/** A reader scrolled this close to the top has the next older page loaded. */
const NEAR_TOP_PX = 40;
/** Keys that scroll a focused log up; at its top they load older history, as scrolling does. */
const SCROLL_UP_KEYS = new Set(['ArrowUp', 'PageUp', 'Home']);

export function makeView(name: string, list?: HTMLOListElement): RoomView {
  const ol = list ?? document.createElement('ol');
  ol.className = 'messages';
  ol.dataset.room = name;
  ol.setAttribute('aria-live', 'polite');
  ol.setAttribute('aria-relevant', 'additions');
  // Focusable, so arrow keys, PageUp and Home scroll it for readers without a mouse.
  ol.tabIndex = 0;
  ol.setAttribute('aria-label', `Messages in #${name}`);
  if (list === undefined) {
    ol.hidden = true;
    lobbyList.parentElement!.insertBefore(ol, composer);
  }
  const entry = document.createElement('li');
  const select = document.createElement('button');
  select.type = 'button';
  select.className = 'room-button';
  select.dataset.room = name;
  const label = document.createElement('span');
  label.className = 'room-name';
  label.textContent = `# ${name}`;
  const badge = document.createElement('span');
  badge.className = 'unread';
  badge.hidden = true;
  select.append(label, badge);
  entry.append(select);
  if (name !== LOBBY) {
    const leave = document.createElement('button');
    leave.type = 'button';
    leave.className = 'leave';
    leave.dataset.leave = name;
    leave.textContent = '×';
    leave.title = `Leave ${name}`;
    leave.setAttribute('aria-label', `Leave ${name}`);
    entry.append(leave);
  }
  roomList.append(entry);
  const view: RoomView = {
    name,
    list: ol,
    entry,
    badge,
    members: [],
    unread: 0,
    mentioned: false,
    epoch: undefined,
    top: 0,
    replayIsNew: false,
    shown: new Set(),
    oldest: undefined,
    more: true,
    loading: false,
    pinned: true,
    scrollTop: 0,
    chars: 0,
    arriving: [],
  };
  ol.addEventListener('scroll', () => {
    if (ol.hidden) return;
    // Lines not yet scrolled to are below, whether or not the reader follows: `settle` says.
    if (!unsettled.has(view)) {
      view.pinned = atBottom(ol);
      view.scrollTop = ol.scrollTop;
    }
    if (ol.scrollTop < NEAR_TOP_PX) loadOlder(view);
  });
  // Already at the top, a key that scrolls up moves nothing and fires no scroll event.
  ol.addEventListener('keydown', (event) => {
    if (SCROLL_UP_KEYS.has(event.key)) loadOlder(view);
  });
  views.set(name, view);
  return view;
}

export const lobby = makeView(LOBBY, lobbyList);
export let selected = lobby;
markSelected();

/** The view of a room by the server's name, or by any spelling the user typed. */
export function findView(name: string): RoomView | undefined {
  const exact = views.get(name);
  if (exact !== undefined) return exact;
  const folded = name.toLowerCase();
  for (const view of views.values()) if (view.name.toLowerCase() === folded) return view;
  return undefined;
}

/**
 * The view an event belongs to: the lobby when it names no room (a server
 * without rooms); undefined for a room this page is not in, rather than
 * showing it somewhere it does not belong.
 */
export function viewFor(room: unknown): RoomView | undefined {
  return typeof room === 'string' ? views.get(room) : lobby;
}

function markSelected(): void {
  for (const view of views.values()) {
    const on = view === selected;
    view.list.hidden = !on;
    // Tests and styles find the visible log as #messages, whichever room it is.
    view.list.id = on ? 'messages' : '';
    const button = view.entry.querySelector('.room-button') as HTMLButtonElement;
    if (on) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
  }
  roomTitle.textContent = `# ${selected.name}`;
  input.placeholder = `Message #${selected.name} — type \\help for commands`;
}

export function select(view: RoomView): void {
  if (view === selected) return;
  selected = view;
  view.unread = 0;
  view.mentioned = false;
  renderBadge(view);
  markSelected();
  view.list.scrollTop = view.pinned ? view.list.scrollHeight : view.scrollTop;
  renderMembers(view);
  loadOlder(view);
}

export function renderBadge(view: RoomView): void {
  view.badge.hidden = view.unread === 0;
  view.badge.textContent = view.unread === 0 ? '' : String(view.unread);
  view.badge.classList.toggle('mentioned', view.mentioned);
  view.badge.setAttribute(
    'aria-label',
    `${view.unread} unread${view.mentioned ? ', you were mentioned' : ''}`,
  );
}

export function removeView(view: RoomView): void {
  if (view === lobby) return;
  if (selected === view) select(lobby);
  view.list.remove();
  view.entry.remove();
  views.delete(view.name);
}

export const notice = (text: string | (Node | string)[], view = selected) =>
  append(view, line('notice', typeof text === 'string' ? [text] : text));
export const error = (text: string, view = selected) => append(view, line('error', [text]));

export function setMembers(view: RoomView, names: string[]): void {
  view.members.splice(0, view.members.length, ...names);
  if (view === selected) renderMembers(view);
}

/**
 * Where `name` is in a room's member list, case aside: the server sends names as it holds them,
 * so this finds them however a line spelt them.
 */
function memberIndex(view: RoomView, name: string): number {
  const folded = name.toLowerCase();
  return view.members.findIndex((m) => m.toLowerCase() === folded);
}

export function removeMember(view: RoomView, name: string): void {
  const i = memberIndex(view, name);
  if (i >= 0) view.members.splice(i, 1);
  if (view === selected) renderMembers(view);
}

export function renameMember(view: RoomView, from: string, to: string): void {
  const i = memberIndex(view, from);
  if (i >= 0) view.members.splice(i, 1);
  if (memberIndex(view, to) < 0) view.members.push(to);
  if (view === selected) renderMembers(view);
}

// ---- older history ------------------------------------------------------------

/**
 * Asks for the messages before the oldest shown, when the reader is at the top, or when
 * asked (`\history n`: `limit` of them, wherever the reader is, then shown from the top).
 */
export function loadOlder(view: RoomView, asked?: number): void {
  if (!connection.history || view.loading || !view.more || view.epoch === undefined) return;
  if (view !== selected || (asked === undefined && view.list.scrollTop >= NEAR_TOP_PX)) return;
  // Nothing shown yet: the history following the "101" is still on its way.
  if (view.oldest === undefined) return;
  if (view.oldest <= 1) {
    view.more = false;
    return;
  }
  const request: Request = {
    cmd: Cmd.HISTORY,
    room: view.name,
    before: view.oldest,
    limit: asked ?? HISTORY_PAGE,
  };
  view.loading = true;
  connection
    .call(request, true)
    .then((m) => {
      onHistory(m);
      // Shown from their first, just short of where the next older page would load.
      if (asked !== undefined) view.list.scrollTop = NEAR_TOP_PX;
    })
    .catch((err: unknown) => {
      view.loading = false;
      if (err instanceof RequestError && err.reply !== 'closed') {
        view.more = false;
        error(err.message, view);
      }
    });
}

/** A "107": older messages go on top, and what the reader was looking at stays put. */
export function onHistory(m: ParsedServerMessage): void {
  const view = findView(asString(m.room));
  if (view === undefined) return;
  view.loading = false;
  const epoch = view.epoch;
  if (epoch === undefined || m.epoch !== epoch) return;
  const entries = (Array.isArray(m.messages) ? m.messages : []) as (Partial<HistoryEntry> | null)[];
  const list = view.list;
  const fromBottom = list.scrollHeight - list.scrollTop;
  // Oldest first in the reply: each goes before the oldest shown of this epoch, and before
  // the notices written just above it, which came after what is older (someone joining, or
  // the reader's welcome when joining brought no history).
  let anchor = list.querySelector(`li[data-epoch="${CSS.escape(epoch)}"]`);
  while (anchor?.previousElementSibling?.classList.contains('notice') === true)
    anchor = anchor.previousElementSibling;
  for (const entry of entries) {
    // Whatever a server sent: an entry that is no object (null) threw, and so did a time that
    // is no number (new Date of {"toString": ""}), losing the rest of the page.
    if (typeof entry !== 'object' || entry === null || typeof entry.id !== 'number') continue;
    const key = `${epoch} ${entry.id}`;
    if (view.shown.has(key)) continue;
    view.shown.add(key);
    const at = typeof entry.at === 'number' ? entry.at : undefined;
    const li = chatLine(asString(entry.from), asString(entry.msg), at, entry.action === true);
    markPast(li);
    li.dataset.epoch = epoch;
    li.dataset.id = String(entry.id);
    list.insertBefore(li, anchor);
    countIn(view, li);
    if (view.oldest === undefined || entry.id < view.oldest) view.oldest = entry.id;
  }
  list.scrollTop = list.scrollHeight - fromBottom;
  view.more = m.more === true;
}
