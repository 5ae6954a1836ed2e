// Finding links in chat text. Pure (no DOM) so the tests can throw generated
// text at it in Node; lines.ts turns the pieces into nodes with DOM APIs.

export interface Piece {
  text: string;
  /** Present only for an http(s) link: the parsed, normalised address. */
  href?: string;
  /**
   * With `href`: what the link shows. The sender's spelling only when it is the address
   * itself; otherwise the address, since a spelling can pass for another (a Cyrillic о in
   * the host goes to xn--…; a right-to-left override shows a second address, reversed).
   */
  shown?: string;
}

function shownAs(text: string, href: string): string {
  return text === href || `${text}/` === href ? text : href;
}

// Only http and https are ever matched, so `javascript:`, `data:` and every
// other scheme stay text. `\b` keeps "xhttps://" from matching mid-word.
const CANDIDATE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
const TRAILING = /[.,;:!?'"»›)\]}]$/;
const PAIRS: Record<string, string> = { ')': '(', ']': '[', '}': '{' };
const BRACKETS = '()[]{}';

/**
 * Sentence punctuation right after a link is not part of it ("see
 * https://a.example/x." or "(https://a.example)"), but a balanced closing
 * bracket is ("https://en.wikipedia.org/wiki/Foo_(bar)").
 *
 * The brackets are counted once and the counts kept as the end moves back:
 * counting the whole link again for each character trimmed made a chat of
 * "https://a" and 4,000 ")" cost every member's page 75 ms to show, so a
 * member sending those at the flood limit froze everyone's web app.
 */
function trimTrailing(url: string): string {
  const counts = new Map<string, number>();
  for (let i = 0; i < url.length; i++) {
    const ch = url[i]!;
    if (BRACKETS.includes(ch)) counts.set(ch, (counts.get(ch) ?? 0) + 1);
  }
  let end = url.length;
  while (end > 0) {
    const last = url[end - 1]!;
    if (!TRAILING.test(last)) break;
    const open = PAIRS[last];
    if (open !== undefined && (counts.get(open) ?? 0) >= (counts.get(last) ?? 0)) break;
    if (open !== undefined) counts.set(last, counts.get(last)! - 1);
    end--;
  }
  return url.slice(0, end);
}

function safeHref(candidate: string): string | undefined {
  let url: URL;
  try {
    url = new URL(candidate);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.hostname === '') return undefined;
  // `https://bank.example@evil.example/` goes to evil.example: no link to pass for another.
  if (url.username !== '' || url.password !== '') return undefined;
  return url.href;
}

/** Splits `text` into plain pieces and http(s) links; the pieces' text joins back to `text`. */
export function findLinks(text: string): Piece[] {
  const pieces: Piece[] = [];
  let plain = '';
  let from = 0;
  for (const match of text.matchAll(CANDIDATE)) {
    const start = match.index;
    const candidate = trimTrailing(match[0]);
    const href = safeHref(candidate);
    if (href === undefined) continue;
    plain += text.slice(from, start);
    if (plain !== '') pieces.push({ text: plain });
    plain = '';
    pieces.push({ text: candidate, href, shown: shownAs(candidate, href) });
    from = start + candidate.length;
  }
  plain += text.slice(from);
  if (plain !== '') pieces.push({ text: plain });
  return pieces;
}
