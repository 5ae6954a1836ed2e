/**
 * The terminal client breaks its own lines into rows instead of leaving that
 * to the terminal, and starts every row after a line's first with an indent.
 * A line always starts at the left edge, so text that a peer pads to reach
 * the next row (spaces up to the terminal's width, then "12:00 admin: ...")
 * shows indented, not as a line of its own.
 *
 * Widths are counted so that a row is never wider than the client thinks:
 * one column for printable ASCII and for the alphabets below U+1100 (Latin,
 * Greek, Cyrillic, Armenian, Hebrew, Arabic, the Indic scripts, Thai,
 * Georgian) and U+1E00–U+1FFF (more Latin and Greek), which no terminal
 * draws wider (a combining mark among them takes none); two for everything
 * else (CJK, Hangul, emoji, and what a terminal may draw either way). So the
 * terminal does not wrap a row itself; at worst a row of wide text ends short
 * of the edge. A terminal set to draw East Asian "ambiguous" characters wide
 * (some Greek, Cyrillic and accented Latin letters among them) is the
 * exception: there a row of such letters can pass the edge.
 */

/** Select Graphic Rendition: the only escape sequences the client writes in its lines. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: the escape character starts what is matched
const SGR = /\x1b\[[0-9;]*m/y;

/** The most columns a row's indent takes; narrower terminals get less. */
const INDENT = 6;

function cells(code: number): number {
  if (code < 0x7f) return code >= 0x20 ? 1 : 2;
  return code < 0x1100 || (code >= 0x1e00 && code < 0x2000) ? 1 : 2;
}

/**
 * `text` (lines made of visible characters and the client's own colours)
 * broken into rows of at most `columns - 1` columns, each row after a line's
 * first indented: between words where a row ends in the middle of one that
 * fits on the next row, anywhere otherwise. A terminal narrower than 4 columns
 * gets the text as it is.
 */
export function wrapRows(text: string, columns: number): string {
  if (!Number.isInteger(columns) || columns < 4) return text;
  const usable = columns - 1;
  const indent = ' '.repeat(Math.max(1, Math.min(INDENT, Math.floor(usable / 4))));
  let out = '';
  for (const [n, line] of text.split('\n').entries()) {
    if (n > 0) out += '\n';
    out += wrapLine(line, usable, indent);
  }
  return out;
}

function wrapLine(line: string, usable: number, indent: string): string {
  let out = '';
  let width = 0;
  // Nothing but the indent on this row yet: a character goes on it even if it does not fit.
  let bare = true;
  // Where the row may break between words: just after its last space that follows some
  // text, with the row's width up to there (-1: no such space).
  let wordBreak = -1;
  let wordBreakWidth = 0;
  let rowHasText = false;
  let i = 0;
  while (i < line.length) {
    if (line.charCodeAt(i) === 0x1b) {
      SGR.lastIndex = i;
      const colour = SGR.exec(line);
      if (colour !== null) {
        out += colour[0];
        i += colour[0].length;
        continue;
      }
    }
    const code = line.codePointAt(i)!;
    const units = code > 0xffff ? 2 : 1;
    const w = cells(code);
    if (!bare && width + w > usable) {
      // The word being written goes to the next row whole when it fits there; a word longer
      // than a row, or text without spaces (Chinese, Japanese), breaks where the row ends.
      const tail = width - wordBreakWidth;
      if (wordBreak >= 0 && indent.length + tail + w <= usable) {
        out = `${out.slice(0, wordBreak)}\n${indent}${out.slice(wordBreak)}`;
        width = indent.length + tail;
        rowHasText = tail > 0;
      } else {
        out += `\n${indent}`;
        width = indent.length;
        bare = true;
        rowHasText = false;
      }
      wordBreak = -1;
    }
    out += line.slice(i, i + units);
    width += w;
    bare = false;
    if (code === 0x20) {
      if (rowHasText) {
        wordBreak = out.length;
        wordBreakWidth = width;
      }
    } else {
      rowHasText = true;
    }
    i += units;
  }
  return out;
}
