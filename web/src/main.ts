import { Cmd, ErrorCode, LOBBY, mayReconnect } from '../../src/protocol/codes.js';
// What a server sends is shown with asString and asNumber, never String() or Number(): those
// throw for an object whose toString and valueOf are not functions ({"toString": ""}), which
// ended the handling of that message (and of \users, \bans, \rooms: their entries too).
import { asNumber, asString } from '../../src/protocol/coerce.js';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import type { HistoryEntry, Request, RoomEntry } from '../../src/protocol/messages.js';
import {
  banList,
  type Command,
  describeBan,
  describeModeration,
  NO_ACTIONS,
  NO_PART_REASON,
  NO_QUIT_MESSAGE,
  parseCommand,
  partRefused,
  tooLongToSend,
} from '../../src/protocol/slash-commands.js';
import { mentions } from '../../src/protocol/text.js';
import { CONFAB_VERSION } from '../../src/protocol/version.js';
import { nickColor, PAGE_BG } from './colors.js';
import { Connection, RequestError, randomId, type Status } from './connection.js';
import { WEB_HELP } from './help.js';
import { findLinks } from './links.js';
import { type KeyValueStore, MAX_NICKNAME, SavedSessions, type TabLocks } from './saved-session.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const input = $<HTMLInputElement>('input');
const composer = $<HTMLFormElement>('composer');
const sendButton = composer.querySelector('button') as HTMLButtonElement;
const joinBackdrop = $<HTMLDivElement>('join');
const joinForm = $<HTMLFormElement>('join-form');
const nicknameInput = $<HTMLInputElement>('nickname');
const joinError = $<HTMLParagraphElement>('join-error');
const statusBox = $<HTMLSpanElement>('status');
const statusText = $<HTMLSpanElement>('status-text');
const statusDetail = $<HTMLSpanElement>('status-detail');
const rttBox = $<HTMLSpanElement>('rtt');
const versionBox = $<HTMLSpanElement>('version');
const memberList = $<HTMLUListElement>('member-list');
const membersPanel = $<HTMLElement>('members');
const membersToggle = $<HTMLButtonElement>('members-toggle');
const countBig = $<HTMLSpanElement>('members-count');
const countSmall = $<HTMLSpanElement>('members-count-small');
const retryButton = $<HTMLButtonElement>('retry');
const staleNote = $<HTMLParagraphElement>('members-stale');
const roomTitle = $<HTMLSpanElement>('room-title');
const roomList = $<HTMLUListElement>('room-list');
const roomForm = $<HTMLFormElement>('room-form');
const roomName = $<HTMLInputElement>('room-name');
const moreRooms = $<HTMLUListElement>('more-rooms');
const moreRoomsTitle = $<HTMLHeadingElement>('more-rooms-title');
const lobbyList = $<HTMLOListElement>('messages');

// Lines typed or pasted faster than the server allows wait their turn; this
// says how many, beside the Send button, so a slow trickle does not look lost.
const queueNote = document.createElement('span');
queueNote.id = 'queue';
queueNote.className = 'queue-note';
queueNote.setAttribute('role', 'status');
queueNote.hidden = true;
composer.insertBefore(queueNote, sendButton);

let rttTimer: ReturnType<typeof setInterval> | undefined;
/** When the RTT still unanswered was asked (performance.now()). */
let rttAskedAt: number | undefined;
/** The RTT is measured this often while connected. */
const RTT_EVERY_MS = 10_000;
/** An RTT unanswered this long means a connection that died without closing. */
const RTT_DEAD_MS = 15_000;

// ---- rooms --------------------------------------------------------------------

/** One room as the page shows it: its lines, members, unread count and history state. */
interface RoomView {
  name: string;
  list: HTMLOListElement;
  entry: HTMLLIElement;
  badge: HTMLSpanElement;
  members: string[];
  unread: number;
  /** Whether a line among the unread names the reader. */
  mentioned: boolean;
  /** The epoch of the latest "101"; lines of another epoch are another history. */
  epoch: string | undefined;
  /** Ids of the latest "101": history up to it follows it; above it is live. */
  top: number;
  /** Whether the history after the latest "101" is news (a recovery) or scrollback. */
  replayIsNew: boolean;
  /** "epoch id" of every stored message shown, so a replay never shows one twice. */
  shown: Set<string>;
  /** The oldest id shown of the current epoch: where HISTORY continues. */
  oldest: number | undefined;
  /** False once the server said nothing older is stored. */
  more: boolean;
  loading: boolean;
  /** Whether the reader follows new lines; kept while the view is hidden (it cannot scroll then). */
  pinned: boolean;
  scrollTop: number;
  /** Characters of text in `list`, which `trim` keeps under MAX_CHARS. */
  chars: number;
  /**
   * Lines written as the reader arrived (the lobby's welcome and message of the day) before
   * the "101" that says which stored messages came before them: it marks them (`arrived`).
   */
  arriving: HTMLLIElement[];
}

const views = new Map<string, RoomView>();

function makeView(name: string, list?: HTMLOListElement): RoomView {
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

const lobby = makeView(LOBBY, lobbyList);
let selected = lobby;
markSelected();

/** The view of a room by the server's name, or by any spelling the user typed. */
function findView(name: string): RoomView | undefined {
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
function viewFor(room: unknown): RoomView | undefined {
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

function select(view: RoomView): void {
  if (view === selected) return;
  selected = view;
  view.unread = 0;
  view.mentioned = false;
  renderBadge(view);
  markSelected();
  view.list.scrollTop = view.pinned ? view.list.scrollHeight : view.scrollTop;
  renderMembers();
  loadOlder(view);
}

function renderBadge(view: RoomView): void {
  view.badge.hidden = view.unread === 0;
  view.badge.textContent = view.unread === 0 ? '' : String(view.unread);
  view.badge.classList.toggle('mentioned', view.mentioned);
  view.badge.setAttribute(
    'aria-label',
    `${view.unread} unread${view.mentioned ? ', you were mentioned' : ''}`,
  );
}

function removeView(view: RoomView): void {
  if (view === lobby) return;
  if (selected === view) select(lobby);
  view.list.remove();
  view.entry.remove();
  views.delete(view.name);
}

// ---- rendering --------------------------------------------------------------

function nickSpan(nickname: string): HTMLSpanElement {
  const span = document.createElement('span');
  span.className = 'nick';
  span.textContent = nickname;
  // Both schemes' colours ride along, so switching the system theme recolours
  // old lines too; style.css picks one. CSSOM sets pass `style-src 'self'`.
  span.style.setProperty('--nick-light', nickColor(PAGE_BG.light, nickname));
  span.style.setProperty('--nick-dark', nickColor(PAGE_BG.dark, nickname));
  return span;
}

/**
 * Links made clickable in one message; the rest stay text. A chat of 4,096
 * characters can hold some 290 links, and a page holding thousands of such
 * lines spent seconds on every frame.
 */
const MAX_LINKS = 16;

/** Message text with http(s) links made clickable (at most MAX_LINKS); everything else stays text. */
function richText(text: string): (Node | string)[] {
  let links = 0;
  return findLinks(text).map(({ text, href, shown }) => {
    if (href === undefined || ++links > MAX_LINKS) return text;
    const a = document.createElement('a');
    a.href = href;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    // Isolated, left to right: a right-to-left override before it in the chat would
    // otherwise show the address reversed (https://evil.example/moc.elgoog//:sptth as
    // https://google.com/…).
    a.dir = 'ltr';
    a.textContent = shown ?? href;
    return a;
  });
}

/**
 * The time of a line: the server's for stored messages, else now. Now also for a time no Date
 * holds (a server's 1e300): toISOString() of it throws, and the message was lost.
 */
function stamp(at?: number): HTMLTimeElement {
  const t = document.createElement('time');
  const given = at === undefined ? undefined : new Date(at);
  const when = given === undefined || Number.isNaN(given.getTime()) ? new Date() : given;
  t.dateTime = when.toISOString();
  t.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return t;
}

function line(className: string, parts: (Node | string)[], at?: number): HTMLLIElement {
  const li = document.createElement('li');
  li.className = className;
  li.append(stamp(at), ...parts);
  return li;
}

const atBottom = (list: HTMLElement) => list.scrollHeight - list.scrollTop - list.clientHeight < 40;

function following(view: RoomView): boolean {
  return view.list.hidden ? view.pinned : atBottom(view.list);
}

function follow(view: RoomView, pinned: boolean): void {
  if (pinned && !view.list.hidden) view.list.scrollTop = view.list.scrollHeight;
}

/**
 * Lines a room keeps on the page, and the characters of text they may hold (a thousand
 * chats of 4,096 are 4 MB to lay out). A room left open for days, or members chatting at
 * the flood limit, would otherwise grow the page, and the ids remembered in `shown`, until
 * each new line cost seconds of layout; older lines come back from history when the
 * reader scrolls up to them.
 */
const MAX_LINES = 1000;
const MAX_CHARS = 200_000;
/** How far past the limits a room goes before it is trimmed: each removal at the top reflows the list. */
const TRIM_SLACK = 50;

/**
 * Drops the oldest lines past the limits. A reader scrolled up may be reading them: then the
 * page keeps up to twice as much, and only lines a screenful above what the reader sees go
 * (past four times as much, the oldest go regardless), so what it reads stays where it is.
 */
function trim(view: RoomView, pinned: boolean): void {
  const list = view.list;
  const lines = pinned ? MAX_LINES : 2 * MAX_LINES;
  const chars = pinned ? MAX_CHARS : 2 * MAX_CHARS;
  if (list.childElementCount <= lines + TRIM_SLACK && view.chars <= chars * 1.25) return;
  const reading =
    !pinned &&
    !list.hidden &&
    list.childElementCount <= 4 * MAX_LINES &&
    view.chars <= 4 * MAX_CHARS;
  const height = list.scrollHeight;
  // Content coordinates: how far down the list a line ends, against a screenful above the view.
  const origin = reading ? list.getBoundingClientRect().top - list.scrollTop : 0;
  const above = list.scrollTop - list.clientHeight;
  // The lines that go are all measured before any goes: a removal moves the rest up, and
  // measuring after it would lay out the list again and judge them where they were not.
  const going: HTMLElement[] = [];
  let left = list.childElementCount;
  for (
    let el = list.firstElementChild as HTMLElement | null;
    el !== null && (left > lines || view.chars > chars);
    el = el.nextElementSibling as HTMLElement | null
  ) {
    if (reading && el.getBoundingClientRect().bottom - origin > above) break;
    going.push(el);
    view.chars -= el.textContent?.length ?? 0;
    left--;
  }
  if (going.length === 0) return;
  for (const el of going) {
    const { epoch, id } = el.dataset;
    if (epoch !== undefined && id !== undefined) view.shown.delete(`${epoch} ${id}`);
    el.remove();
  }
  // History continues from the oldest line left of the current epoch.
  const epoch = view.epoch;
  const oldest =
    epoch === undefined
      ? null
      : list.querySelector<HTMLElement>(`li[data-epoch="${CSS.escape(epoch)}"]`);
  if (oldest !== null) {
    view.oldest = Number(oldest.dataset.id);
    view.more = true;
  }
  if (!pinned && !list.hidden) list.scrollTop -= height - list.scrollHeight;
}

/**
 * Views given lines not yet trimmed and scrolled to, with whether each followed the newest
 * line before them. Measuring, trimming and scrolling for each line laid out the whole list
 * per line (with thousands of lines kept, milliseconds each, while a flood queues hundreds);
 * the lines that arrive back to back now go on the page at once and are laid out once, by
 * a task queued behind them: a MessageChannel's, which runs in a hidden tab too (unlike
 * requestAnimationFrame) and without a timer's delay.
 */
const unsettled = new Map<RoomView, boolean>();
const settler = new MessageChannel();
settler.port1.onmessage = settle;

/** Before a line goes into a view: notes whether the reader follows, if not noted since the last settle. */
function adding(view: RoomView): void {
  if (unsettled.has(view)) return;
  if (unsettled.size === 0) settler.port2.postMessage(null);
  unsettled.set(view, following(view));
}

/** Trims the views given lines, and keeps those the reader followed at the bottom. */
function settle(): void {
  const batch = [...unsettled];
  unsettled.clear();
  for (const [view, pinned] of batch) {
    if (views.get(view.name) !== view) continue;
    trim(view, pinned);
    follow(view, pinned);
    if (view.list.hidden) continue;
    view.pinned = atBottom(view.list);
    view.scrollTop = view.list.scrollTop;
  }
}

/** Appends a line; keeps the view pinned to the bottom unless the reader scrolled up. */
function append(view: RoomView, li: HTMLLIElement): HTMLLIElement {
  adding(view);
  view.list.append(li);
  view.chars += li.textContent?.length ?? 0;
  return li;
}

/**
 * Marks the lines written as the reader arrived in a room (`lines`) with the stored messages
 * that came before them, as its "101" says: its epoch, up to its top.
 */
function arrived(view: RoomView, lines: HTMLLIElement[]): void {
  if (view.epoch === undefined) return;
  for (const li of lines) {
    li.dataset.arrivedEpoch = view.epoch;
    li.dataset.arrivedTop = String(view.top);
  }
}

/**
 * Whether a line was written as the reader arrived, after the stored message `id` of `epoch`.
 * Such a message goes above it: the history shown on joining, and the older pages loaded
 * above that, are one run, which the welcome and the message of the day (or a room's join
 * line) follow, as they followed it in time; below them comes what was said since.
 */
function arrivedAfter(el: Element, epoch: string, id: number): boolean {
  const d = (el as HTMLElement).dataset;
  return d.arrivedEpoch === epoch && d.arrivedTop !== undefined && id <= Number(d.arrivedTop);
}

/**
 * Puts a stored message in id order: before any of the same epoch with a
 * higher id, before the reader's own lines still waiting for their id, and
 * above the lines written as the reader arrived after it was stored.
 * Usually that is the end, so the walk stops at once.
 */
function placeStored(view: RoomView, li: HTMLLIElement, epoch: string, id: number): void {
  adding(view);
  let before: Element | null = null;
  for (let el = view.list.lastElementChild; el !== null; el = el.previousElementSibling) {
    const d = (el as HTMLElement).dataset;
    const later = d.id !== undefined && d.epoch === epoch && Number(d.id) > id;
    if (d.pending === undefined && !later && !arrivedAfter(el, epoch, id)) break;
    before = el;
  }
  li.dataset.epoch = epoch;
  li.dataset.id = String(id);
  view.list.insertBefore(li, before);
  view.chars += li.textContent?.length ?? 0;
}

const notice = (text: string | (Node | string)[], view = selected) =>
  append(view, line('notice', typeof text === 'string' ? [text] : text));

/**
 * A name a server sent, inside a line of the page's own words: in a <bdi>, so bidirectional
 * controls in it (a course server relays any nickname) end with it. Written into the text,
 * a nickname ending in U+202E (right-to-left override) showed the rest of the line reversed:
 * "mal<U+202E> is now known as bob" could be made to read as another rename.
 */
function named(name: string): HTMLElement {
  const bdi = document.createElement('bdi');
  bdi.textContent = name;
  return bdi;
}
/**
 * A name inside a line of shared words built as text (describeModeration): between U+2068 and
 * U+2069, the text's own <bdi>, for the same reason as named().
 */
function isolated(name: string): string {
  return `\u2068${name}\u2069`;
}
const error = (text: string, view = selected) => append(view, line('error', [text]));

/** Whether someone else's chat names the page's user (marked, and told on the room's badge). */
function mentionsMe(from: string, msg: string): boolean {
  return from !== connection.nickname && mentions(msg, connection.nickname);
}

/** `action`: IRC's /me, shown as "* ann waves". */
function chatLine(from: string, msg: string, at?: number, action = false): HTMLLIElement {
  const mine = from === connection.nickname;
  const kind = `${mine ? 'msg mine' : 'msg'}${action ? ' action' : ''}${mentionsMe(from, msg) ? ' mention' : ''}`;
  return line(kind, [...(action ? ['* '] : []), nickSpan(from), ...richText(msg)], at);
}

/** A line from history, said before the reader came: dimmed, and told so on hover. */
function markPast(li: HTMLLIElement): void {
  li.classList.add('history');
  li.title = 'from history';
}

/** Shows a stored message once (`past`: as history); false if it was already shown. */
function showStored(
  view: RoomView,
  epoch: string,
  entry: { id: number; at?: number; from: string; msg: string; action?: boolean },
  past = false,
): boolean {
  const key = `${epoch} ${entry.id}`;
  if (view.shown.has(key)) return false;
  view.shown.add(key);
  if (epoch === view.epoch && (view.oldest === undefined || entry.id < view.oldest))
    view.oldest = entry.id;
  const li = chatLine(entry.from, entry.msg, entry.at, entry.action === true);
  if (past) markPast(li);
  placeStored(view, li, epoch, entry.id);
  return true;
}

function renderMembers(): void {
  const members = selected.members;
  memberList.replaceChildren(
    ...members.map((name) => {
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.nick = name;
      const avatar = document.createElement('span');
      avatar.className = 'avatar';
      // Its letter is white (style.css), so the colour is chosen against white.
      avatar.style.background = nickColor('#ffffff', name);
      avatar.textContent = [...name][0]?.toUpperCase() ?? '?';
      avatar.setAttribute('aria-hidden', 'true');
      // A long name is cut with an ellipsis (style.css); the tooltip shows it whole.
      const shown = document.createElement('span');
      shown.className = 'name';
      shown.textContent = name;
      button.title = name;
      button.append(avatar, shown);
      if (name === connection.nickname) {
        const you = document.createElement('span');
        you.className = 'you';
        you.textContent = '(you)';
        button.append(you);
        button.setAttribute('aria-label', `${name} (you)`);
      } else {
        button.setAttribute('aria-label', `Whisper to ${name}`);
      }
      li.append(button);
      return li;
    }),
  );
  countBig.textContent = String(members.length);
  countSmall.textContent = String(members.length);
}

/**
 * The nicknames of a "10" list ([[nickname, ip, port], ...]), whatever a server sent: no list
 * is none, and each name is shown as text. Read as sent, a list of another shape threw: the
 * page then kept its old member list marked offline, and \users said nothing.
 */
function memberNames(users: unknown): string[] {
  if (!Array.isArray(users)) return [];
  return users.map((entry: unknown) => asString(Array.isArray(entry) ? entry[0] : entry));
}

function setMembers(view: RoomView, names: string[]): void {
  view.members.splice(0, view.members.length, ...names);
  if (view === selected) renderMembers();
}

function removeMember(view: RoomView, name: string): void {
  const i = view.members.findIndex((m) => m.toLowerCase() === name.toLowerCase());
  if (i >= 0) view.members.splice(i, 1);
  if (view === selected) renderMembers();
}

function renameMember(view: RoomView, from: string, to: string): void {
  const i = view.members.indexOf(from);
  if (i >= 0) view.members.splice(i, 1);
  view.members.push(to);
  if (view === selected) renderMembers();
}

/** While offline the list shows who was there, not who is: say so, to eyes and to screen readers. */
function setStale(stale: boolean): void {
  membersPanel.dataset.stale = String(stale);
  staleNote.hidden = !stale;
  if (stale) memberList.setAttribute('aria-describedby', 'members-stale');
  else memberList.removeAttribute('aria-describedby');
}

// ---- unread counts ------------------------------------------------------------

const baseTitle = document.title;
let hiddenUnread = 0;

/**
 * A new message in a room: counted on the room if another is selected, in the title if the
 * tab is hidden. `mention`: it names the reader.
 */
function countUnread(view: RoomView, mention = false): void {
  if (view !== selected) {
    view.unread++;
    if (mention) view.mentioned = true;
    renderBadge(view);
  }
  if (document.visibilityState !== 'hidden') return;
  hiddenUnread++;
  document.title = `(${hiddenUnread}) ${baseTitle}`;
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'visible') return;
  hiddenUnread = 0;
  document.title = baseTitle;
});

// ---- connection -------------------------------------------------------------

const STATUS_TEXT: Record<Status, string> = {
  offline: 'Offline',
  connecting: 'Connecting…',
  online: 'Connected',
  reconnecting: 'Reconnecting…',
};

/** Why a "101" could not replay everything (docs/protocol.md), in words. */
const NOT_RECOVERED: Record<string, string> = {
  epoch: "the server's stored history was reset or restored",
  ahead: 'the server is behind this page',
  deleted: 'they were already deleted',
  'too-many': 'too many were missed (scroll up to load them)',
  off: 'the server keeps no history',
};

/** Reading `window.sessionStorage` or `localStorage` throws where the browser forbids storage. */
function storage(which: 'sessionStorage' | 'localStorage'): KeyValueStore | undefined {
  try {
    return window[which];
  } catch {
    return undefined;
  }
}

/** The browser's Web Locks, which it gives only a secure context (HTTPS, or loopback). */
function webLocks(): TabLocks | undefined {
  const locks = (navigator as { locks?: LockManager }).locks;
  if (locks === undefined) return undefined;
  return {
    take: (name, waitMs) =>
      new Promise((resolve) => {
        // Not AbortSignal.timeout, which browsers gave pages after Web Locks.
        const abort = new AbortController();
        const timer = waitMs > 0 ? setTimeout(() => abort.abort(), waitMs) : undefined;
        const options: LockOptions = waitMs > 0 ? { signal: abort.signal } : { ifAvailable: true };
        locks
          .request(name, options, (lock) => {
            clearTimeout(timer);
            if (lock === null) {
              resolve(undefined);
              return;
            }
            // Held until let go, or until the page is gone.
            return new Promise<void>((release) => resolve(() => release()));
          })
          .catch(() => {
            clearTimeout(timer);
            resolve(undefined);
          });
      }),
  };
}

const saved = new SavedSessions(
  storage('sessionStorage'),
  storage('localStorage'),
  typeof BroadcastChannel === 'function' ? new BroadcastChannel('confab.sessions') : undefined,
  randomId,
  webLocks(),
);
/**
 * The rooms of the session the page came back as, until it is back in: joining under
 * another nickname (its own was taken meanwhile) still rejoins them.
 */
let restoredRooms: string[] | undefined;

const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

/** The operator name OPER granted this session; a new session starts without it. */
let operatorName: string | undefined;

/** The status last shown, to tell the moment a connection is lost from the retries after it. */
let shownStatus: Status = 'offline';

const connection = new Connection(wsUrl, {
  rooms: () => views.size,
  status(status, detail) {
    const was = shownStatus;
    shownStatus = status;
    statusBox.dataset.status = status;
    statusText.textContent = STATUS_TEXT[status];
    statusBox.title = detail ?? '';
    const online = status === 'online';
    // Reconnecting to a server that keeps history, chats are kept and sent once back.
    const canType = online || (status === 'reconnecting' && connection.history);
    input.disabled = !canType;
    sendButton.disabled = !canType;
    retryButton.hidden = status !== 'reconnecting';
    retryButton.disabled = !connection.retryPending;
    // Back online, the list stays stale until USERS has refreshed it (joined).
    if (!online) {
      setStale(true);
      clearInterval(rttTimer);
      rttBox.textContent = '';
      // An answer to HISTORY will not come on this socket; scrolling up asks again.
      for (const view of views.values()) view.loading = false;
    }
    // Each attempt's countdown replaces the last in the header; the log says once that the
    // connection was lost (and "Reconnected" once it is back), not once per attempt.
    statusDetail.textContent =
      status === 'online' ? '' : (detail ?? (status === 'reconnecting' ? 'Trying now…' : ''));
    if (was === 'online' && status === 'reconnecting') notice('Connection lost. Reconnecting…');
    if (detail !== undefined && status === 'offline') notice(detail);
    // Before the first join the card covers the page, so say there why nothing happens yet;
    // pressing Join again skips the wait.
    if (status === 'connecting' && detail !== undefined && !joinBackdrop.hidden)
      joinError.textContent = detail;
    if (status === 'offline') {
      // Nothing brings the chats still waiting for their "71" back: say so on each.
      for (const li of document.querySelectorAll<HTMLLIElement>('.messages li[data-pending]'))
        markNotSent(li, 'Not sent: disconnected before the server took it');
      showJoin(detail);
    }
  },
  async joined({ nickname, userCount, rejoined, resumed, motd }) {
    setJoinOpen(false);
    lastSent = undefined;
    restoredRooms = undefined;
    if (!rejoined) {
      // A new session (the user joined again after leaving): the rooms of the old one are gone.
      for (const view of [...views.values()])
        if (view !== lobby && !connection.resume.has(view.name)) removeView(view);
    }
    const wasOperator = resumed ? undefined : operatorName;
    if (!resumed) operatorName = undefined;
    const said = notice(
      rejoined
        ? `Reconnected as ${nickname}.${wasOperator === undefined ? '' : ` You are no longer operator ${wasOperator} (a new session): \\oper again.`}`
        : `Welcome, ${nickname}! You are the ${userCount}${ordinalSuffix(userCount)} user. Type \\help for commands.`,
      lobby,
    );
    // The lobby's history, which follows its "101", goes above the welcome and the message of
    // the day. Coming back, what was missed is news, and follows "Reconnected".
    lobby.arriving = rejoined ? [] : [said];
    // Once a page: a new session after a lost one is told it again, and needs it no more.
    if (motd !== undefined && !rejoined) {
      const text = document.createElement('pre');
      text.className = 'motd';
      text.textContent = motd;
      lobby.arriving.push(append(lobby, line('notice', [text])));
    }
    input.focus();
    // Watched from the start: a connection that dies while the lists below load is found too.
    clearInterval(rttTimer);
    rttAskedAt = undefined;
    rttTimer = setInterval(watchRtt, RTT_EVERY_MS);
    try {
      if (!resumed) {
        setMembers(lobby, memberNames((await connection.call({ cmd: Cmd.USERS }, true)).users));
      }
      setStale(false);
      const version = await connection.call({ cmd: Cmd.VERSION }, true);
      versionBox.textContent = `server v${asString(version.serverVersion)}`;
      await askRtt();
      await listMoreRooms();
    } catch {
      // The connection dropped while loading; reconnecting will try again.
    }
  },
  refused(reason, lostNickname) {
    if (lostNickname === undefined) {
      showJoin(reason);
      return;
    }
    // Joining under another name is still this user coming back: to the same rooms, whose
    // views (and the lines marked not sent in them) stay.
    restoredRooms = connection.resume.joined();
    const suggestion = freeNickname(lostNickname);
    nicknameInput.value = suggestion;
    showJoin(
      `Your nickname ${lostNickname} was taken by someone else while you were disconnected. Join as ${suggestion}, or pick another one.`,
    );
  },
  message: onMessage,
  queued(waiting, dropped) {
    queueNote.hidden = waiting === 0;
    queueNote.textContent = waiting === 0 ? '' : `${waiting} waiting…`;
    queueNote.title =
      waiting === 0 ? '' : 'Sent in order, as fast as the server allows (its flood limit)';
    if (dropped > 0)
      error(`${dropped} queued ${dropped === 1 ? 'line was' : 'lines were'} not sent.`);
  },
  chatRefused(chat, reason) {
    const li = pendingLine(chat.cid);
    if (li !== undefined) markNotSent(li, `Not sent: ${reason}`);
    const view = findView(chat.room) ?? selected;
    error(`Not sent: ${reason}`, view);
  },
  chatBanned(chat) {
    const li = chat === undefined ? lastSent : pendingLine(chat.cid);
    if (li === undefined) return;
    li.classList.add('refused');
    markNotSent(li, 'Refused: it contains a banned word');
    const view = views.get(li.closest('ol')?.dataset.room ?? '') ?? selected;
    error('Not sent: this message was refused for a banned word.', view);
  },
  roomLost(room, reason) {
    const view = findView(room);
    if (view === undefined) return;
    error(`Could not rejoin #${room}: ${reason}`, view);
    removeView(view);
    notice(`You are no longer in #${room}.`);
  },
  save(session) {
    saved.save(session);
  },
});

/**
 * A nickname like `taken` that nobody in the rooms this page knows has (nina_, nina_2, …).
 * The server may still know someone by it; then the card says so as for any taken name.
 */
function freeNickname(taken: string): string {
  const known = new Set<string>();
  for (const view of views.values()) for (const m of view.members) known.add(m.toLowerCase());
  for (let n = 1; ; n++) {
    const suffix = n === 1 ? '_' : `_${n}`;
    const base = [...taken].slice(0, MAX_NICKNAME - suffix.length).join('');
    const name = `${base}${suffix}`;
    if (!known.has(name.toLowerCase())) return name;
  }
}

function ordinalSuffix(n: number): string {
  if (n % 100 >= 11 && n % 100 <= 13) return 'th';
  return ['th', 'st', 'nd', 'rd'][n % 10] ?? 'th';
}

function pendingLine(cid: string): HTMLLIElement | undefined {
  for (const view of views.values()) {
    for (const li of view.list.querySelectorAll<HTMLLIElement>('li[data-pending]'))
      if (li.dataset.pending === cid) return li;
  }
  return undefined;
}

/** Marks where messages are missing, with the server's reason in words. */
function gapMarker(view: RoomView, reason: unknown): void {
  const why = typeof reason === 'string' ? reason : 'unknown';
  const marker = line('marker', [
    `Some messages could not be recovered: ${NOT_RECOVERED[why] ?? why}.`,
  ]);
  marker.dataset.reason = why;
  marker.setAttribute('role', 'note');
  append(view, marker);
}

/**
 * A "108": the server lost messages of a room this page stays in. After a
 * history reset the ids start again in a new epoch, so the lines that follow
 * are told apart from the old ones by it.
 */
function onGap(m: ParsedServerMessage): void {
  const view = viewFor(m.room);
  if (view === undefined) return;
  if (m.reason === 'epoch' && typeof m.epoch === 'string' && m.epoch !== view.epoch) {
    view.epoch = m.epoch;
    view.oldest = undefined;
    view.top = 0;
    view.more = true;
    view.replayIsNew = false;
  }
  gapMarker(view, m.reason);
}

// ---- rooms not joined ---------------------------------------------------------

/** At most this many rooms the page is not in are listed (those whose names hold what the room box holds). */
const MORE_ROOMS_SHOWN = 30;
/** The rooms of the last ROOMS the page is not in, with their counts, in the server's order. */
let moreRoomEntries: { name: string; userCount: number }[] = [];
/** Focusing the room box asks for the list again at most this often. */
const MORE_ROOMS_EVERY_MS = 10_000;
let moreRoomsAskedAt = Number.NEGATIVE_INFINITY;

/**
 * The rooms the server has that this page is not in (ROOMS), under the joined ones, so
 * that the rooms an operator declared are found and joined with a click rather than by
 * guessing their names. Asked once joined, after a part, and when the room box gets focus.
 */
async function listMoreRooms(): Promise<void> {
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
function showMoreRoomEntries(): void {
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
function unlistMoreRoom(room: string): void {
  const folded = room.toLowerCase();
  moreRoomEntries = moreRoomEntries.filter((r) => r.name.toLowerCase() !== folded);
  for (const join of moreRooms.querySelectorAll<HTMLButtonElement>('button[data-join]')) {
    if (join.dataset.join?.toLowerCase() === folded) join.parentElement?.remove();
  }
  showMoreRooms();
}

function relistMoreRooms(): void {
  listMoreRooms().catch(() => {
    // The connection dropped meanwhile: the list is asked for again once back.
  });
}

/** A "101": the room is joined (again); its history follows. */
function onRoomJoined(m: ParsedServerMessage): void {
  const room = asString(m.room);
  unlistMoreRoom(room);
  const existing = views.get(room);
  const view = existing ?? makeView(room);
  setMembers(view, Array.isArray(m.members) ? m.members.map((n) => asString(n)) : []);
  const epoch = typeof m.epoch === 'string' ? m.epoch : undefined;
  if (epoch !== view.epoch) {
    view.epoch = epoch;
    view.oldest = undefined;
    view.more = true;
  }
  view.top = typeof m.top === 'number' ? m.top : 0;
  view.replayIsNew = m.recovered === true;
  if (m.recovered === false) gapMarker(view, m.reason);
  if (existing === undefined && view !== lobby) {
    view.arriving.push(notice(`You joined #${room} (${asNumber(m.userCount)} here).`, view));
  }
  arrived(view, view.arriving.splice(0));
  fillOnceArrived(view);
}

/**
 * The history that follows a "101" may not fill the view, leaving nothing to scroll: then
 * more is asked for, once it has arrived (its newest line, the room's top when joined, is
 * shown). A view found part-filled while its lines still came in, on a busy machine, asked
 * for an older page it did not need.
 */
function fillOnceArrived(view: RoomView, tries = 10): void {
  setTimeout(() => {
    const arriving =
      view.top > 0 && view.epoch !== undefined && !view.shown.has(`${view.epoch} ${view.top}`);
    if (arriving && tries > 1) fillOnceArrived(view, tries - 1);
    // Filled, it scrolls: the reader scrolling to its top loads more.
    else if (view.list.scrollHeight <= view.list.clientHeight) loadOlder(view);
  }, 300);
}

function onMessage(m: ParsedServerMessage): void {
  switch (m.cmd) {
    case Cmd.CHAT_RESPONSE: {
      const from = asString(m.from);
      if (m.whisper === true) {
        const tag = document.createElement('span');
        tag.className = 'tag';
        tag.textContent = 'whisper';
        append(selected, line('whisper', [tag, nickSpan(from), ...richText(asString(m.msg))]));
        countUnread(selected);
        return;
      }
      const view = viewFor(m.room);
      if (view === undefined) return;
      if (typeof m.id === 'number' && view.epoch !== undefined) {
        const history = m.id <= view.top;
        const at = typeof m.at === 'number' ? m.at : undefined;
        const msg = asString(m.msg);
        const action = m.action === true;
        // Scrollback is dimmed, as the terminal does; what a recovery brings is news.
        const past = history && !view.replayIsNew;
        const added = showStored(view, view.epoch, { id: m.id, at, from, msg, action }, past);
        if (added && !past) countUnread(view, mentionsMe(from, msg));
        return;
      }
      const msg = asString(m.msg);
      append(view, chatLine(from, msg, undefined, m.action === true));
      countUnread(view, mentionsMe(from, msg));
      return;
    }
    case Cmd.CHAT_STORED: {
      const view = viewFor(m.room);
      if (view === undefined) return;
      const li = typeof m.cid === 'string' ? pendingLine(m.cid) : undefined;
      if (li === undefined || typeof m.id !== 'number' || view.epoch === undefined) return;
      li.removeAttribute('data-pending');
      const key = `${view.epoch} ${m.id}`;
      // Stored before the connection dropped and replayed since: that copy stands.
      // Its text is counted again where it goes (placeStored), or goes.
      view.chars -= li.textContent?.length ?? 0;
      if (view.shown.has(key)) {
        li.remove();
        return;
      }
      view.shown.add(key);
      if (view.oldest === undefined) view.oldest = m.id;
      li.remove();
      if (li.dataset.queued !== undefined) sentOnceBack(li, m.at);
      placeStored(view, li, view.epoch, m.id);
      return;
    }
    case Cmd.HISTORY_RESPONSE:
      onHistory(m);
      return;
    case Cmd.HISTORY_GAP:
      onGap(m);
      return;
    case Cmd.JOIN_ROOM_SUCCESS:
      onRoomJoined(m);
      return;
    case Cmd.PART_ROOM_SUCCESS: {
      const view = findView(asString(m.room));
      if (view !== undefined) removeView(view);
      notice(`You left #${asString(m.room)}.`);
      relistMoreRooms();
      return;
    }
    case Cmd.NEW_USER_ENTERS: {
      const view = viewFor(m.room);
      if (view === undefined) return;
      const who = asString(m.nickname);
      if (!view.members.includes(who)) view.members.push(who);
      if (view === selected) renderMembers();
      notice([named(who), ` joined (${asNumber(m.userCount)} users)`], view);
      return;
    }
    case Cmd.EXIT_BROADCAST: {
      const view = viewFor(m.room);
      if (view === undefined) return;
      removeMember(view, asString(m.nickname));
      notice(
        [
          named(asString(m.nickname)),
          ` left (${asNumber(m.userCount)} ${asNumber(m.userCount) === 1 ? 'user' : 'users'})`,
        ],
        view,
      );
      return;
    }
    case Cmd.USER_RENAMED: {
      const view = viewFor(m.room);
      if (view === undefined) return;
      renameMember(view, asString(m.oldNickname), asString(m.newNickname));
      notice(
        [named(asString(m.oldNickname)), ' is now known as ', named(asString(m.newNickname))],
        view,
      );
      return;
    }
    case Cmd.MODERATION_NOTICE:
      notice(
        describeModeration({
          action: asString(m.action),
          nickname: isolated(asString(m.nickname)),
          by: isolated(asString(m.by)),
          // An operator's words, isolated like names: an override in them reorders nothing after.
          reason: typeof m.reason === 'string' && m.reason !== '' ? isolated(m.reason) : '',
          ...(typeof m.seconds === 'number' ? { seconds: m.seconds } : {}),
        }),
      );
      return;
    case Cmd.ERROR: {
      const text = asString(m.message);
      // A passing reason (the server restarting, cut off from its cluster) is nothing the
      // user did wrong: said as a notice, before the page reconnects by itself.
      if (mayReconnect(asNumber(m.code)))
        notice(`${text.charAt(0).toUpperCase()}${text.slice(1)}.`);
      else error(text);
      return;
    }
  }
}

// ---- older history ------------------------------------------------------------

const HISTORY_PAGE = 50;
/** The course server's, and confab's default --max-message, for a server that told none. */
const DEFAULT_MAX_MESSAGE = 4096;
/** A reader scrolled this close to the top has the next older page loaded. */
const NEAR_TOP_PX = 40;

/**
 * Asks for the messages before the oldest shown, when the reader is at the top, or when
 * asked (`\history n`: `limit` of them, wherever the reader is, then shown from the top).
 */
function loadOlder(view: RoomView, asked?: number): void {
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
function onHistory(m: ParsedServerMessage): void {
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
    view.chars += li.textContent?.length ?? 0;
    if (view.oldest === undefined || entry.id < view.oldest) view.oldest = entry.id;
  }
  list.scrollTop = list.scrollHeight - fromBottom;
  view.more = m.more === true;
}

function showBans(bans: unknown): void {
  // Entries of the wrong kind threw in describeBan, and the command showed nothing.
  const list = banList(bans);
  if (list.length === 0) {
    notice('No bans.');
    return;
  }
  const pre = document.createElement('pre');
  pre.textContent = list
    .map((b) =>
      describeBan({
        ...b,
        mask: oneLine(b.mask),
        by: oneLine(b.by),
        reason: b.reason === '' ? '' : oneLine(b.reason),
      }),
    )
    .join('\n');
  append(selected, line('notice', [pre]));
}

/**
 * Words a server sent, for a line of a listing kept in a <pre>: its line breaks shown as "↵",
 * so that a ban's reason cannot add lines that look like other bans, and isolated.
 */
function oneLine(text: string): string {
  return isolated(text.replace(/[\r\n\v\f\u0085\u2028\u2029]/g, '↵'));
}

/** The page's own RTT, shown in the header; while it is unanswered, rttAskedAt says since when. */
async function askRtt(): Promise<void> {
  rttAskedAt = performance.now();
  try {
    await measureRtt(false);
  } finally {
    rttAskedAt = undefined;
  }
}

/** Each tick: an RTT unanswered for RTT_DEAD_MS means a connection dead without having closed. */
function watchRtt(): void {
  if (rttAskedAt === undefined) {
    // A drop between two ticks is reported by the status, not as an unhandled rejection.
    askRtt().catch(() => {});
  } else if (connection.waiting > 0) {
    // Still queued behind a paste the flood limit paces: not sent, so not unanswered yet.
    rttAskedAt = performance.now();
  } else if (performance.now() - rttAskedAt > RTT_DEAD_MS) {
    rttAskedAt = undefined;
    connection.abandon();
  }
}

async function measureRtt(announce: boolean): Promise<void> {
  const begin = performance.timeOrigin + performance.now();
  const reply = await connection.call({ cmd: Cmd.RTT, beginTime: begin }, !announce);
  const ms = performance.timeOrigin + performance.now() - asNumber(reply.beginTime);
  rttBox.textContent = `RTT ${ms.toFixed(1)} ms`;
  if (announce) notice(`RTT: ${ms.toFixed(3)} ms`);
}

// ---- input ------------------------------------------------------------------

async function joinRoom(name: string): Promise<void> {
  // Already in it: said, as the form and the room list would show nothing new.
  const typeInto = (existing: RoomView) => {
    if (existing === selected)
      append(existing, line('notice', [`You are already in #${existing.name}.`]));
    select(existing);
  };
  const existing = findView(name);
  if (existing !== undefined) {
    typeInto(existing);
    return;
  }
  if (!connection.caps.has('rooms')) {
    error('This server has no rooms besides the lobby.');
    return;
  }
  let reply: ParsedServerMessage;
  try {
    reply = await connection.call({ cmd: Cmd.JOIN_ROOM, room: name });
  } catch (err) {
    // A look-alike spelling of a room it is in ("Mаths" with a Cyrillic "а"), which only the
    // server tells: its 1016 names the room.
    const joined =
      err instanceof RequestError && err.code === ErrorCode.ALREADY_IN_ROOM
        ? findView(err.room ?? '')
        : undefined;
    if (joined === undefined) throw err;
    typeInto(joined);
    return;
  }
  const view = findView(asString(reply.room));
  if (view !== undefined) select(view);
}

async function leaveRoom(name: string): Promise<void> {
  const view = findView(name);
  if (view === lobby) {
    error('The lobby is left with \\exit.');
    return;
  }
  await connection.call({ cmd: Cmd.PART_ROOM, room: view?.name ?? name });
}

/** The chat line typed last: without history it is all that tells which chat a "90" 2001 refused. */
let lastSent: HTMLLIElement | undefined;

function sendChat(text: string, action = false): void {
  const view = selected;
  const chat = connection.chat(view.name, text, action);
  const li = chatLine(connection.nickname, text, undefined, action);
  // Shown at once; its place among stored messages is known when "71" gives its id.
  if (chat !== undefined) li.dataset.pending = chat.cid;
  // Typed while the connection is down: sent once it is back. Marked before it is counted
  // into the view, as the mark's words are counted out with the line's when it is stored.
  if (chat !== undefined && shownStatus !== 'online') markWaiting(li);
  append(view, li);
  lastSent = li;
}

/**
 * One of the reader's lines typed while the connection is down: dimmed and said to wait from
 * the moment it is typed, as the terminal says at once. Shown plain until the connection was
 * back, it read as if the others had it already.
 */
function markWaiting(li: HTMLLIElement): void {
  li.dataset.queued = '';
  li.title = 'Waiting for the connection: sent once it is back';
  const mark = document.createElement('span');
  mark.className = 'queued waiting';
  mark.textContent = '(waiting for the connection)';
  li.append(mark);
}

/** A line that waited for the connection, now sent or given up: it waits no more. */
function unmarkWaiting(li: HTMLLIElement): void {
  if (li.dataset.queued === undefined) return;
  li.removeAttribute('data-queued');
  li.removeAttribute('title');
  li.querySelector('.waiting')?.remove();
}

/**
 * One of the reader's lines typed while the connection was down, now stored: it goes where the
 * server placed it, so it takes the server's time and says why it is not where it was typed.
 */
function sentOnceBack(li: HTMLLIElement, at: unknown): void {
  unmarkWaiting(li);
  if (typeof at === 'number') li.querySelector('time')?.replaceWith(stamp(at));
  const mark = document.createElement('span');
  mark.className = 'queued';
  mark.textContent = '(sent once reconnected)';
  li.append(mark);
}

/** Marks one of the reader's own lines as never delivered, to eyes (struck out) and in words. */
function markNotSent(li: HTMLLIElement, why: string): void {
  li.removeAttribute('data-pending');
  unmarkWaiting(li);
  li.classList.add('failed');
  li.title = why;
  if (li.querySelector('.not-sent') !== null) return;
  const mark = document.createElement('span');
  mark.className = 'not-sent';
  mark.textContent = 'not sent';
  li.append(mark);
}

async function submit(text: string): Promise<void> {
  const command = parseCommand(text);
  try {
    switch (command.kind) {
      case 'empty':
        return;
      case 'chat':
        sendChat(command.text);
        return;
      case 'action':
        if (!connection.caps.has('actions')) error(NO_ACTIONS);
        else sendChat(command.text, true);
        return;
      case 'whisper': {
        const reply = await connection.call({
          cmd: Cmd.WHISPER,
          to: command.to,
          msg: command.text,
        });
        if (reply.cmd === Cmd.WHISPER_NO_SUCH_USER)
          error(`There is no user named “${command.to}”.`);
        else if (reply.cmd === Cmd.WHISPER_MYSELF) error("You can't whisper to yourself.");
        else {
          const tag = document.createElement('span');
          tag.className = 'tag';
          tag.textContent = `to ${command.to}`;
          append(selected, line('whisper mine', [tag, ...richText(command.text)]));
        }
        return;
      }
      case 'rename': {
        const old = connection.nickname;
        const reply = await connection.call({ cmd: Cmd.RENAME, newNickname: command.nickname });
        if (reply.cmd === Cmd.RENAME_DUPLICATE_NICKNAME) {
          // The server answers a rename to one's own name as it answers one to a taken name.
          error(
            command.nickname === old
              ? `You are already ${command.nickname}.`
              : `The nickname “${command.nickname}” is taken.`,
          );
          return;
        }
        connection.nickname = asString(reply.newNickname);
        for (const view of views.values()) renameMember(view, old, connection.nickname);
        connection.saveSession();
        notice(`You are now known as ${connection.nickname}.`);
        return;
      }
      case 'users': {
        const view = command.room === undefined ? selected : findView(command.room);
        const room = view?.name ?? command.room ?? lobby.name;
        const request: Request = view === lobby ? { cmd: Cmd.USERS } : { cmd: Cmd.USERS, room };
        const names = memberNames((await connection.call(request)).users);
        if (view !== undefined) setMembers(view, names);
        // Each name isolated: one ending in U+202E showed the names after it reversed.
        notice([
          command.room === undefined
            ? `${names.length} in the room: `
            : `${names.length} in #${room}: `,
          ...names.flatMap((name, i) => (i === 0 ? [named(name)] : [', ', named(name)])),
        ]);
        return;
      }
      case 'rtt':
        await measureRtt(true);
        return;
      case 'version': {
        const reply = await connection.call({ cmd: Cmd.VERSION });
        notice(
          `Server version ${asString(reply.serverVersion)}, web client confab ${CONFAB_VERSION}`,
        );
        return;
      }
      case 'help': {
        const pre = document.createElement('pre');
        pre.textContent = WEB_HELP;
        append(selected, line('notice', [pre]));
        return;
      }
      case 'oper': {
        const reply = await connection.call({
          cmd: Cmd.OPER,
          name: command.name,
          password: command.password,
        });
        operatorName = asString(reply.name);
        notice(`You are now operator ${operatorName}.`);
        return;
      }
      case 'kick':
        connection.send(
          command.reason === ''
            ? { cmd: Cmd.KICK, nickname: command.nickname }
            : { cmd: Cmd.KICK, nickname: command.nickname, reason: command.reason },
        );
        return;
      case 'ban': {
        const request: Request = { cmd: Cmd.BAN, mask: command.mask };
        if (command.seconds !== undefined) request.seconds = command.seconds;
        if (command.reason !== '') request.reason = command.reason;
        showBans((await connection.call(request)).bans);
        return;
      }
      case 'unban':
        showBans((await connection.call({ cmd: Cmd.UNBAN, mask: command.mask })).bans);
        return;
      case 'bans':
        showBans((await connection.call({ cmd: Cmd.BANS })).bans);
        return;
      case 'exit':
        restoredRooms = undefined;
        if (command.message !== undefined) notice(NO_QUIT_MESSAGE);
        connection.leave();
        return;
      case 'invalid':
        error(command.message);
        return;
      case 'join':
        await joinRoom(command.room);
        return;
      case 'part': {
        const refused = partRefused(command, (room) => findView(room) !== undefined);
        if (refused !== undefined) {
          error(refused);
          return;
        }
        await leaveRoom(command.room ?? selected.name);
        if (command.reason !== undefined) notice(NO_PART_REASON);
        return;
      }
      case 'room': {
        const view = findView(command.room);
        if (view === undefined) error(`You are not in #${command.room}; \\join it first.`);
        else select(view);
        return;
      }
      case 'history':
        if (!connection.history) error('This server keeps no history.');
        else if (!selected.more || (selected.oldest ?? 1) <= 1) {
          append(selected, line('notice', [`Nothing older in #${selected.name}.`]));
        } else loadOlder(selected, command.count);
        return;
      case 'rooms': {
        const reply = (await connection.call({ cmd: Cmd.ROOMS })).rooms;
        // Whatever a server sent: entries of the wrong kind threw, and \\rooms showed nothing.
        const rooms: unknown[] = Array.isArray(reply) ? reply : [];
        const pre = document.createElement('pre');
        pre.textContent = rooms
          .map((entry) => {
            const r = (
              typeof entry === 'object' && entry !== null ? entry : {}
            ) as Partial<RoomEntry>;
            return `${r.joined === true ? '*' : ' '} #${asString(r.room)} (${asString(r.userCount)})`;
          })
          .join('\n');
        append(selected, line('notice', [pre]));
        return;
      }
    }
  } catch (err) {
    if (err instanceof RequestError && err.reply !== 'closed') error(err.message);
  }
}

/**
 * A message (a line's parsed command) longer than the server takes is refused here rather than
 * cut or refused by the server (the composer keeps it to be shortened): whether that is so,
 * said if it is.
 */
function tooLong(command: Command): boolean {
  const msg =
    command.kind === 'chat' || command.kind === 'action' || command.kind === 'whisper'
      ? command.text
      : '';
  const refused = tooLongToSend(msg, connection.maxMessage ?? DEFAULT_MAX_MESSAGE);
  if (refused === undefined) return false;
  error(refused);
  return true;
}

/**
 * A line that cannot go out now, said why: too long, a command refused here, or one that
 * needs the server while it is away (chats wait for it; leaving does not need it). The
 * composer keeps it, to be fixed or sent again.
 */
function heldBack(text: string): boolean {
  const command = parseCommand(text);
  if (tooLong(command)) return true;
  if (command.kind === 'invalid') {
    error(command.message);
    return true;
  }
  const local =
    command.kind === 'chat' ||
    command.kind === 'action' ||
    command.kind === 'empty' ||
    command.kind === 'exit';
  if (statusBox.dataset.status !== 'online' && !local) {
    error('Not connected right now; try again once reconnected.');
    return true;
  }
  return false;
}

composer.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = input.value;
  if (heldBack(text)) return;
  input.value = '';
  void submit(text);
});

/** Keys that scroll a focused log up; at its top they load older history, as scrolling does. */
const SCROLL_UP_KEYS = new Set(['ArrowUp', 'PageUp', 'Home']);

/**
 * PageUp and PageDown in the composer scroll the log, and Ctrl+Home and Ctrl+End go to its
 * ends (a one-line input loses nothing: Home and End still move the caret), so a reader on
 * the keyboard reads back without leaving what they are typing.
 */
function scrollFromComposer(event: KeyboardEvent): void {
  const list = selected.list;
  // A line of the old page stays in view, as the browser's own PageUp keeps one.
  const page = Math.max(list.clientHeight - 40, 40);
  let top: number;
  if (event.key === 'PageUp' && !event.ctrlKey) top = list.scrollTop - page;
  else if (event.key === 'PageDown' && !event.ctrlKey) top = list.scrollTop + page;
  else if (event.key === 'Home' && event.ctrlKey) top = 0;
  else if (event.key === 'End' && event.ctrlKey) top = list.scrollHeight;
  else return;
  event.preventDefault();
  list.scrollTop = top;
  // Already at the top nothing scrolled, so no scroll event asks for older lines.
  if (top <= 0) loadOlder(selected);
}

input.addEventListener('keydown', scrollFromComposer);

// A pasted page goes out a message per line, in order, as from the terminal client (the
// input holds one line, and joined the lines with spaces); what follows the last line break
// stays in the input, as if typed. Blank lines are skipped.
input.addEventListener('paste', (event) => {
  const pasted = event.clipboardData?.getData('text/plain') ?? '';
  if (!/[\r\n]/.test(pasted)) return;
  event.preventDefault();
  const start = input.selectionStart ?? input.value.length;
  const end = input.selectionEnd ?? start;
  const lines = `${input.value.slice(0, start)}${pasted}${input.value.slice(end)}`.split(
    /\r\n|\r|\n/,
  );
  const rest = lines.pop() ?? '';
  const whole = lines.filter((l) => l.trim() !== '');
  // None goes if one is held back: the page is kept whole in order, not sent with a hole.
  if (whole.some(heldBack)) return;
  input.value = rest;
  // In order: a line that waits for an answer (\join) goes before the lines after it.
  void whole.reduce((before, line) => before.then(() => submit(line)), Promise.resolve());
});

/** Joins from the sidebar (its form or its list): the input is typed into next. */
function joinFromSidebar(name: string): void {
  joinRoom(name)
    .then(() => input.focus())
    .catch((err: unknown) => {
      if (err instanceof RequestError && err.reply !== 'closed') error(err.message);
    });
}

roomForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const name = roomName.value.trim();
  if (name === '' || /\s/.test(name)) return;
  roomName.value = '';
  showMoreRoomEntries();
  joinFromSidebar(name);
});

roomName.addEventListener('input', showMoreRoomEntries);

roomName.addEventListener('focus', () => {
  if (shownStatus !== 'online') return;
  if (performance.now() - moreRoomsAskedAt >= MORE_ROOMS_EVERY_MS) relistMoreRooms();
});

moreRooms.addEventListener('click', (event) => {
  const name = (event.target as HTMLElement).closest('button')?.dataset.join;
  if (name !== undefined) joinFromSidebar(name);
});

roomList.addEventListener('click', (event) => {
  const button = (event.target as HTMLElement).closest('button');
  if (button === null) return;
  const leave = button.dataset.leave;
  if (leave !== undefined) {
    leaveRoom(leave).catch((err: unknown) => {
      if (err instanceof RequestError && err.reply !== 'closed') error(err.message);
    });
    return;
  }
  const view = button.dataset.room === undefined ? undefined : views.get(button.dataset.room);
  if (view !== undefined) select(view);
});

memberList.addEventListener('click', (event) => {
  const button = (event.target as HTMLElement).closest('button');
  const nick = button?.dataset.nick;
  if (nick === undefined || nick === connection.nickname) return;
  input.value = `\\wh ${nick} `;
  input.focus();
  membersPanel.classList.remove('open');
  membersToggle.setAttribute('aria-expanded', 'false');
});

retryButton.addEventListener('click', () => connection.retryNow());
// The network coming back is as good a reason as a click.
window.addEventListener('online', () => connection.retryNow());

membersToggle.addEventListener('click', () => {
  const open = membersPanel.classList.toggle('open');
  membersToggle.setAttribute('aria-expanded', String(open));
});

/** What is behind the join card: out of reach (Tab, clicks, screen readers) while it is open. */
const behindJoin = [
  document.querySelector('header') as HTMLElement,
  document.querySelector('main') as HTMLElement,
];

function setJoinOpen(open: boolean): void {
  joinBackdrop.hidden = !open;
  for (const el of behindJoin) el.inert = open;
}

function showJoin(message?: string): void {
  setJoinOpen(true);
  joinError.textContent = message ?? '';
  nicknameInput.value ||= connection.nickname;
  nicknameInput.focus();
  nicknameInput.select();
}

joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const nickname = nicknameInput.value.trim();
  if (nickname === '' || /\s/.test(nickname)) {
    joinError.textContent = 'Nicknames cannot be empty or contain spaces.';
    return;
  }
  joinError.textContent = '';
  connection.join(nickname, restoredRooms && { rooms: restoredRooms }, false);
});

/**
 * A reload comes back as the same user, in the same rooms; so does a page opened after
 * the user closed one without leaving (SavedSessions).
 */
async function restoreSession(): Promise<void> {
  const navigation = performance.getEntriesByType('navigation')[0] as
    | PerformanceNavigationTiming
    | undefined;
  const discarded = (document as { wasDiscarded?: boolean }).wasDiscarded === true;
  const { session, elsewhere } = await saved.load(navigation?.type ?? 'navigate', discarded);
  if (session === undefined) {
    if (elsewhere) showElsewhere();
    else showJoin();
    return;
  }
  restoredRooms = session.rooms;
  nicknameInput.value = session.nickname;
  // It rejoins by itself; the card only covers the page until it has.
  setJoinOpen(true);
  connection.join(session.nickname, {
    ...(session.resume !== undefined ? { resume: session.resume } : {}),
    rooms: session.rooms,
  });
}

/** This tab's session is another tab's: the card says so, with an empty nickname field. */
function showElsewhere(): void {
  showJoin(
    'You are chatting in another tab of this browser. Pick a nickname to chat here as someone else.',
  );
  // Not the other tab's nickname (connection.nickname, or the browser's form restore).
  nicknameInput.value = '';
}

window.addEventListener('pagehide', () => saved.hide());
window.addEventListener('pageshow', (event) => {
  if (!event.persisted) return;
  void saved.show().then((ours) => {
    if (ours) return;
    // Another tab took this session while the page was away: it is that tab's now.
    connection.leave();
    showElsewhere();
  });
});

void restoreSession();
