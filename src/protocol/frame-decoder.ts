/**
 * Splits a byte stream into JSON frames without knowing where the sender put
 * delimiters. The course client writes bare `json.dumps(...)` with nothing
 * between objects; confab's own peers end each object with "\n". Both work:
 *
 *  - whitespace between frames is skipped;
 *  - a frame that starts with "{" or "[" ends at its matching bracket
 *    (strings and escapes are tracked, so brackets inside strings don't count);
 *  - a frame that starts with anything else runs to the end of the line, so
 *    garbage costs one frame and the stream re-synchronises at the next "\n".
 *
 * Scanning is incremental: each byte is examined once however the stream is
 * chunked. Frames handed to the sink are views into the decoder's or the
 * caller's memory and are valid only during the call.
 */

export class FrameTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`frame exceeds ${limit} bytes`);
    this.name = 'FrameTooLargeError';
  }
}

enum Mode {
  Between = 0,
  Bracket = 1,
  Line = 2,
}

const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const TAB = 0x09;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

const EMPTY = new Uint8Array(0);

export class FrameDecoder {
  /** Bytes of an unfinished frame carried over from earlier chunks. */
  private pending: Uint8Array = EMPTY;
  private pendingLength = 0;
  private mode = Mode.Between;
  private depth = 0;
  private inString = false;
  private escaped = false;

  /**
   * @param maxFrame largest frame accepted, in bytes; also caps what is buffered.
   * @param onFrame receives each complete frame (without surrounding whitespace).
   */
  constructor(
    private readonly maxFrame: number,
    private readonly onFrame: (frame: Uint8Array) => void,
  ) {}

  /** Bytes held for a frame not yet complete. */
  get buffered(): number {
    return this.pendingLength;
  }

  /** Feeds a chunk. Throws FrameTooLargeError once a frame passes maxFrame. */
  push(chunk: Uint8Array): void {
    if (this.pendingLength === 0) {
      this.scan(chunk, 0, null);
      return;
    }
    // Scan only the new bytes, but frames that began earlier need the carried
    // bytes in front, so append first and continue where the scan stopped.
    const resumeAt = this.pendingLength;
    this.append(chunk);
    const owned = this.pending;
    const length = this.pendingLength;
    this.pending = EMPTY;
    this.pendingLength = 0;
    this.scan(owned.subarray(0, length), resumeAt, owned);
  }

  /** Drops any partial frame and resets to the start state. */
  reset(): void {
    this.pending = EMPTY;
    this.pendingLength = 0;
    this.mode = Mode.Between;
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
  }

  /**
   * @param from where scanning resumes; bytes before it belong to the frame
   *   in progress (only when resuming from a carried-over prefix).
   * @param owned the decoder's own buffer behind data, reusable for the
   *   remainder; null when data belongs to the caller and must be copied.
   */
  private scan(data: Uint8Array, from: number, owned: Uint8Array | null): void {
    const end = data.length;
    let start = from === 0 ? -1 : 0;
    let i = from;
    while (i < end) {
      if (this.mode === Mode.Between) {
        const b = data[i]!;
        if (b === SPACE || b === LF || b === CR || b === TAB) {
          i++;
          continue;
        }
        start = i;
        if (b === OPEN_BRACE || b === OPEN_BRACKET) {
          this.mode = Mode.Bracket;
          this.depth = 1;
        } else {
          this.mode = Mode.Line;
        }
        i++;
        continue;
      }
      if (this.mode === Mode.Line) {
        const nl = data.indexOf(LF, i);
        if (nl < 0) {
          i = end;
          break;
        }
        let stop = nl;
        if (stop > start && data[stop - 1] === CR) stop--;
        this.emit(data, start, stop);
        i = nl + 1;
        continue;
      }
      // Bracket mode, the hot path for well-formed traffic. String bodies,
      // most of a chat frame, get their own loop that looks only for the
      // closing quote and escapes.
      let depth = this.depth;
      let inString = this.inString;
      let escaped = this.escaped;
      while (i < end) {
        if (inString) {
          if (escaped) {
            escaped = false;
            i++;
          }
          let b = 0;
          while (i < end) {
            b = data[i]!;
            if (b === QUOTE || b === BACKSLASH) break;
            i++;
          }
          if (i === end) break;
          if (b === QUOTE) inString = false;
          else escaped = true;
          i++;
          continue;
        }
        const b = data[i]!;
        if (b === QUOTE) {
          inString = true;
        } else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
          depth++;
        } else if ((b === CLOSE_BRACE || b === CLOSE_BRACKET) && --depth === 0) {
          break;
        }
        i++;
      }
      this.depth = depth;
      this.inString = inString;
      this.escaped = escaped;
      if (i < end) {
        this.emit(data, start, i + 1);
        i++;
      }
    }
    if (this.mode !== Mode.Between) {
      const partial = end - start;
      if (partial > this.maxFrame) throw new FrameTooLargeError(this.maxFrame);
      this.keep(data.subarray(start, end), start === 0 ? owned : null);
    }
  }

  private emit(data: Uint8Array, start: number, stop: number): void {
    this.mode = Mode.Between;
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
    if (stop - start > this.maxFrame) throw new FrameTooLargeError(this.maxFrame);
    this.onFrame(data.subarray(start, stop));
  }

  private keep(bytes: Uint8Array, reusable: Uint8Array | null): void {
    if (reusable !== null) {
      this.pending = reusable;
      this.pendingLength = bytes.length;
      return;
    }
    this.pending = EMPTY;
    this.pendingLength = 0;
    this.append(bytes);
  }

  private append(bytes: Uint8Array): void {
    const needed = this.pendingLength + bytes.length;
    if (needed > this.pending.length) {
      const grown = new Uint8Array(Math.max(needed, this.pending.length * 2, 256));
      grown.set(this.pending.subarray(0, this.pendingLength));
      this.pending = grown;
    }
    this.pending.set(bytes, this.pendingLength);
    this.pendingLength = needed;
  }
}
