// A room's view and its log: how lines go in (appended, or stored messages placed in id order),
// how the oldest are trimmed, and how a view keeps following the newest line. Which view is
// selected, and the sidebar, are rooms.ts's.
import { chatLine, markPast } from './lines.js';

/** One room as the page shows it: its lines, members, unread count and history state. */
export interface RoomView {
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

export const views = new Map<string, RoomView>();

export const atBottom = (list: HTMLElement) =>
  list.scrollHeight - list.scrollTop - list.clientHeight < 40;

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
/**
 * What each line added to its room's `chars` when it was counted in: taken out as such, since
 * the marks on one's own lines (waiting, not sent) change its text meanwhile.
 */
const counted = new WeakMap<Element, number>();

/** Counts a line that goes into `view` into its `chars`. */
export function countIn(view: RoomView, li: Element): void {
  const length = li.textContent?.length ?? 0;
  counted.set(li, length);
  view.chars += length;
}

/** Takes a line that leaves `view` (or is placed again) out of its `chars`. */
export function countOut(view: RoomView, li: Element): void {
  view.chars -= counted.get(li) ?? 0;
  counted.delete(li);
}

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
    countOut(view, el);
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
export const unsettled = new Map<RoomView, boolean>();
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
export function append(view: RoomView, li: HTMLLIElement): HTMLLIElement {
  adding(view);
  view.list.append(li);
  countIn(view, li);
  return li;
}

/**
 * Marks the lines written as the reader arrived in a room (`lines`) with the stored messages
 * that came before them, as its "101" says: its epoch, up to its top.
 */
export function arrived(view: RoomView, lines: HTMLLIElement[]): void {
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
export function placeStored(view: RoomView, li: HTMLLIElement, epoch: string, id: number): void {
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
  countIn(view, li);
}

/** Shows a stored message once (`past`: as history); false if it was already shown. */
export function showStored(
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

export function pendingLine(cid: string): HTMLLIElement | undefined {
  for (const view of views.values()) {
    for (const li of view.list.querySelectorAll<HTMLLIElement>('li[data-pending]'))
      if (li.dataset.pending === cid) return li;
  }
  return undefined;
}
