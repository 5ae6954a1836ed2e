// Lines as the page shows them: DOM builders for a line, its time, a nickname, links in its
// text, names a server sent, and the marks on the reader's own lines. They only build nodes;
// where a line goes in a room is views.ts's.
import { mentions } from '../../src/protocol/text.js';
import { nickColor, PAGE_BG } from './colors.js';
import { findLinks } from './links.js';
import { connection } from './state.js';

/** A span of text styled by `className`: a tag or a mark on a line. */
export function textSpan(className: string, text: string): HTMLSpanElement {
  const span = document.createElement('span');
  span.className = className;
  span.textContent = text;
  return span;
}

export function nickSpan(nickname: string): HTMLSpanElement {
  const span = textSpan('nick', nickname);
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

/**
 * Combining marks shown on one character; the rest of a longer run is shown as one "…". A
 * chat of a letter and 4,095 marks (within --max-message) took a page 35–50 ms to lay out
 * against 3 for plain text of that length, so one member at the flood limit held every
 * reader's page for seconds. Writing that stacks marks uses a few on a letter; nicknames
 * may not hold more than 8 in a row. Characters that draw nothing (a zero-width non-joiner,
 * say) count in the run: one after every 16 marks left them all stacked on one letter.
 */
const MAX_MARKS = 16;
const STACKED = '[\\p{M}\\p{Default_Ignorable_Code_Point}]';
const MARK_RUN = new RegExp(`(${STACKED}{${MAX_MARKS}})${STACKED}+`, 'gu');

/**
 * Code points in one grapheme cluster, which no row may break, at most; the rest of a longer
 * one is shown as one "…". Besides stacked marks, a run of Arabic signs written before a
 * number (U+0600–0605: "Prepend"), of Hangul's conjoining letters, or of consonants joined by
 * viramas makes one cluster of any length: it ran past the pane's edge, and the rest of the
 * chat could not be read. Writing as people do makes clusters of a few: a family emoji is 7.
 */
const MAX_CLUSTER = MAX_MARKS + 1;
const graphemes =
  typeof Intl.Segmenter === 'function'
    ? new Intl.Segmenter(undefined, { granularity: 'grapheme' })
    : undefined;

function cutClusters(text: string): string {
  // ASCII alone never clusters past two (a CR LF); most chats are spared the segmenter.
  if (graphemes === undefined || !/[^\0-\x7f]/.test(text)) return text;
  let cut: string[] | undefined;
  let from = 0;
  for (const { segment, index } of graphemes.segment(text)) {
    // A cluster's code points are at most its UTF-16 units: most are not counted.
    if (segment.length <= MAX_CLUSTER) continue;
    const points = [...segment];
    if (points.length <= MAX_CLUSTER) continue;
    cut ??= [];
    cut.push(text.slice(from, index), points.slice(0, MAX_CLUSTER).join(''), '…');
    from = index + segment.length;
  }
  return cut === undefined ? text : cut.join('') + text.slice(from);
}

/**
 * Message text with http(s) links made clickable (at most MAX_LINKS), runs of combining
 * marks cut (MAX_MARKS) and so are clusters no row can break (MAX_CLUSTER); everything
 * else stays text.
 */
export function richText(text: string): (Node | string)[] {
  let links = 0;
  return findLinks(cutClusters(text.replace(MARK_RUN, '$1…'))).map(({ text, href, shown }) => {
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
export function stamp(at?: number): HTMLTimeElement {
  const t = document.createElement('time');
  const given = at === undefined ? undefined : new Date(at);
  const when = given === undefined || Number.isNaN(given.getTime()) ? new Date() : given;
  t.dateTime = when.toISOString();
  t.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return t;
}

export function line(className: string, parts: (Node | string)[], at?: number): HTMLLIElement {
  const li = document.createElement('li');
  li.className = className;
  li.append(stamp(at), ...parts);
  return li;
}

/**
 * A name a server sent, inside a line of the page's own words: in a <bdi>, so bidirectional
 * controls in it (a course server relays any nickname) end with it. Written into the text,
 * a nickname ending in U+202E (right-to-left override) showed the rest of the line reversed:
 * "mal<U+202E> is now known as bob" could be made to read as another rename.
 */
export function named(name: string): HTMLElement {
  const bdi = document.createElement('bdi');
  bdi.textContent = name;
  return bdi;
}
/**
 * A name inside a line of shared words built as text (describeModeration): between U+2068 and
 * U+2069, the text's own <bdi>, for the same reason as named().
 */
export function isolated(name: string): string {
  return `\u2068${name}\u2069`;
}

/** Whether someone else's chat names the page's user (marked, and told on the room's badge). */
export function mentionsMe(from: string, msg: string): boolean {
  return from !== connection.nickname && mentions(msg, connection.nickname);
}

/** `action`: IRC's /me, shown as "* ann waves". */
export function chatLine(from: string, msg: string, at?: number, action = false): HTMLLIElement {
  const mine = from === connection.nickname;
  const kind = `${mine ? 'msg mine' : 'msg'}${action ? ' action' : ''}${mentionsMe(from, msg) ? ' mention' : ''}`;
  return line(kind, [...(action ? ['* '] : []), nickSpan(from), ...richText(msg)], at);
}

/** A line from history, said before the reader came: dimmed, and told so on hover. */
export function markPast(li: HTMLLIElement): void {
  li.classList.add('history');
  li.title = 'from history';
}

/**
 * One of the reader's lines typed while the connection is down: dimmed and said to wait from
 * the moment it is typed, as the terminal says at once. Shown plain until the connection was
 * back, it read as if the others had it already.
 */
export function markWaiting(li: HTMLLIElement): void {
  li.dataset.queued = '';
  li.title = 'Waiting for the connection: sent once it is back';
  li.append(textSpan('queued waiting', '(waiting for the connection)'));
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
export function sentOnceBack(li: HTMLLIElement, at: unknown): void {
  unmarkWaiting(li);
  if (typeof at === 'number') li.querySelector('time')?.replaceWith(stamp(at));
  li.append(textSpan('queued', '(sent once reconnected)'));
}

/** Marks one of the reader's own lines as never delivered, to eyes (struck out) and in words. */
export function markNotSent(li: HTMLLIElement, why: string): void {
  li.removeAttribute('data-pending');
  unmarkWaiting(li);
  li.classList.add('failed');
  li.title = why;
  if (li.querySelector('.not-sent') !== null) return;
  li.append(textSpan('not-sent', 'not sent'));
}
