/**
 * Splits a byte stream into JSON frames without knowing where the sender put
 * delimiters. The course client writes bare `json.dumps(...)` with nothing
 * between objects; confab's own peers end each object with "\n". Both work:
 *
 *  - whitespace between frames is skipped, but each BLANK_RUN bytes of a run
 *    of it (or maxFrame) are reported as refused('blank'), so it is not free;
 *  - only a "{" that can begin an object ("{" then, after optional
 *    whitespace, '"' or "}") starts a frame, which ends at its matching
 *    bracket (strings and escapes are tracked, so brackets inside strings
 *    don't count);
 *  - any other bytes are garbage: skipped, never buffered, up to the next
 *    such "{" or the end of the line, and reported as one refusal, so the
 *    next request is cut at once even from a client that sends no newlines;
 *  - a line feed inside a string (never in JSON, which escapes it) ends the
 *    frame there as one refusal: a line with an unclosed quote does not
 *    swallow the lines after it;
 *  - a frame nested deeper than maxDepth is skipped (only counters are kept)
 *    and reported as one refusal, so nothing downstream recurses into it.
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

/**
 * Whitespace between frames reported as one refusal (or maxFrame, if smaller): no client
 * puts this much between two requests, and at a refusal per maxFrame (64 KiB) one address's
 * connections could stream some 170 MB/s of blanks within flood control.
 */
export const BLANK_RUN = 4096;

/** Nesting (objects and arrays together) deeper than this is refused. */
export const MAX_DEPTH = 32;

/**
 * 'too-large' only with `oversize: 'skip'`; otherwise an oversize frame throws. 'blank' is
 * BLANK_RUN bytes of whitespace: worth a request to flood control, yet no error, since a
 * client's keep-alive newlines add up to it too, given an hour.
 */
export type FrameRefusal = 'garbage' | 'blank' | 'too-deep' | 'too-large';

export interface FrameSink {
  /** A complete frame, without surrounding whitespace; valid only during the call. */
  frame(bytes: Uint8Array): void;
  /** A run of garbage or blanks, or a too-deep frame, was skipped; each counts as one frame. */
  refused(reason: FrameRefusal): void;
}

export interface FrameDecoderOptions {
  /** Deepest nesting accepted; default MAX_DEPTH. */
  maxDepth?: number;
  /**
   * A frame over maxFrame: 'throw' FrameTooLargeError (the default; a server
   * drops such a peer), or 'skip' it to its end, keeping only counters, and
   * report it as refused('too-large'), so that a client can go on reading
   * without resynchronising in the middle of someone else's message.
   */
  oversize?: 'throw' | 'skip';
}

enum Mode {
  Between = 0,
  /** Saw "{" (and maybe whitespace): a frame only if '"' or "}" comes next. */
  Opening = 1,
  Bracket = 2,
  /** Inside a frame past maxDepth: scanned to its end, not kept. */
  Deep = 3,
  /** Bytes that cannot start a frame: counted, not kept. */
  Garbage = 4,
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
const COLON = 0x3a;
const COMMA = 0x2c;

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
   * The frame's last byte outside strings that is not whitespace (a string's opening quote
   * for the string): a bracket may open only after ':', ',' or '['.
   */
  private last = 0;
  /** Garbage seen but not yet reported. */
  private garbage = 0;
  /** Bytes of a too-deep frame scanned in earlier chunks. */
  private deepBytes = 0;
  /** Whitespace since the last frame or garbage began. */
  private blank = 0;
  private readonly maxDepth: number;
  private readonly blankRun: number;
  private readonly skipOversize: boolean;

  /**
   * @param maxFrame largest frame accepted, in bytes; also caps what is buffered.
   * @param sink receives each complete frame and each refusal, in stream order.
   */
  constructor(
    private readonly maxFrame: number,
    private readonly sink: FrameSink,
    options: FrameDecoderOptions = {},
  ) {
    this.maxDepth = options.maxDepth ?? MAX_DEPTH;
    this.blankRun = Math.min(maxFrame, BLANK_RUN);
    this.skipOversize = options.oversize === 'skip';
  }

  /** Bytes held for a frame not yet complete. */
  get buffered(): number {
    return this.pendingLength;
  }

  /**
   * Memory held for a frame not yet complete: the buffer around its bytes, which grows by
   * doubling, so up to twice `buffered` (a frame in many pieces), and 256 bytes at least.
   */
  get held(): number {
    return this.pendingLength === 0 ? 0 : this.pending.length;
  }

  /**
   * Whether a frame already past maxFrame is being skipped (`oversize: 'skip'`), which is
   * reported only at its end: a reader waiting for one frame need not wait for that end.
   */
  get skippingOversize(): boolean {
    return this.mode === Mode.Deep && this.deepBytes > this.maxFrame;
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

  /** Drops any partial frame or unreported garbage and resets to the start state. */
  reset(): void {
    this.pending = EMPTY;
    this.pendingLength = 0;
    this.mode = Mode.Between;
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
    this.last = 0;
    this.garbage = 0;
    this.deepBytes = 0;
    this.blank = 0;
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
      const mode = this.mode;
      if (mode === Mode.Between) {
        const b = data[i]!;
        if (b === SPACE || b === LF || b === CR || b === TAB) {
          i++;
          // Counted as garbage is: a stream of nothing else would cost the server a scan of
          // every byte and its sender nothing.
          if (++this.blank >= this.blankRun) {
            this.blank = 0;
            this.sink.refused('blank');
          }
        } else if (b === OPEN_BRACE) {
          this.blank = 0;
          start = i;
          i++;
          // The usual '{"' goes straight to the bracket scan, which reads the quote.
          if (i < end && data[i] === QUOTE) {
            this.mode = Mode.Bracket;
            this.depth = 1;
            this.last = OPEN_BRACE;
          } else {
            this.mode = Mode.Opening;
          }
        } else {
          this.blank = 0;
          this.mode = Mode.Garbage;
        }
        continue;
      }
      if (mode === Mode.Opening) {
        const b = data[i]!;
        if (b === SPACE || b === LF || b === CR || b === TAB) {
          i++;
          // Checked per byte, not per chunk, so chunking cannot change the outcome.
          if (i - start > this.maxFrame) {
            this.mode = Mode.Garbage;
            this.addGarbage(i - start);
          }
          continue;
        }
        if (b === QUOTE || b === CLOSE_BRACE) {
          if (this.garbage > 0) this.refuseGarbage();
          // The bracket scan re-reads the opening '"' or "}" from here.
          this.mode = Mode.Bracket;
          this.depth = 1;
          this.last = OPEN_BRACE;
          continue;
        }
        // Not an object after all: the "{" and its whitespace join the garbage,
        // and this byte is looked at again as garbage (it may be a real "{").
        this.mode = Mode.Garbage;
        this.addGarbage(i - start);
        continue;
      }
      if (mode === Mode.Garbage) {
        let g = this.garbage;
        let b = 0;
        while (i < end) {
          b = data[i]!;
          if (b === LF || b === OPEN_BRACE) break;
          i++;
          // Counted, never kept: a long run costs one refusal per maxFrame bytes.
          if (++g >= this.maxFrame) {
            this.garbage = g;
            this.refuseGarbage();
            g = 0;
          }
        }
        this.garbage = g;
        if (i === end) break;
        if (b === LF) {
          this.mode = Mode.Between;
          if (g > 0) this.refuseGarbage();
        } else {
          start = i;
          this.mode = Mode.Opening;
        }
        i++;
        continue;
      }
      // Bracket mode, the hot path for well-formed traffic, and Deep mode,
      // which scans the same way with no depth limit and keeps nothing.
      // String bodies, most of a chat frame, get their own loop that looks
      // only for the closing quote and escapes.
      const limit = mode === Mode.Bracket ? this.maxDepth : Number.POSITIVE_INFINITY;
      const segment = i;
      let depth = this.depth;
      let inString = this.inString;
      let escaped = this.escaped;
      let last = this.last;
      // Where the frame ends as garbage: at a raw line feed in a string, which no JSON string
      // holds (skipped), or at a bracket where JSON allows none, such as the next request's
      // '{' after one left unclosed (kept: it begins the next frame).
      let cut: 0 | typeof LF | typeof OPEN_BRACE = 0;
      while (i < end) {
        if (inString) {
          if (escaped) {
            if (data[i] === LF) {
              cut = LF;
              break;
            }
            escaped = false;
            i++;
          }
          let b = 0;
          while (i < end) {
            b = data[i]!;
            if (b === QUOTE || b === BACKSLASH || b === LF) break;
            i++;
          }
          if (i === end) break;
          if (b === LF) {
            cut = LF;
            break;
          }
          if (b === QUOTE) inString = false;
          else escaped = true;
          i++;
          continue;
        }
        const b = data[i]!;
        if (b === QUOTE) {
          inString = true;
        } else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
          if (last !== COLON && last !== COMMA && last !== OPEN_BRACKET) {
            cut = OPEN_BRACE;
            break;
          }
          if (++depth > limit) break;
        } else if ((b === CLOSE_BRACE || b === CLOSE_BRACKET) && --depth === 0) {
          break;
        }
        if (b > SPACE) last = b;
        i++;
      }
      if (cut !== 0) {
        // Refused up to the line's end, or up to the bracket: a line with an unclosed quote,
        // or a request left unclosed before the next, costs one refusal, and what follows is
        // read as new. Its size counts as a frame's would, so that where the chunks end
        // cannot change the outcome.
        const size = mode === Mode.Bracket ? i - start : this.deepBytes + (i - segment);
        this.mode = Mode.Between;
        this.depth = 0;
        this.inString = false;
        this.escaped = false;
        this.last = 0;
        this.deepBytes = 0;
        start = -1;
        if (cut === LF) i++;
        if (size <= this.maxFrame) this.sink.refused(mode === Mode.Deep ? 'too-deep' : 'garbage');
        else if (this.skipOversize) this.sink.refused('too-large');
        else throw new FrameTooLargeError(this.maxFrame);
        continue;
      }
      this.depth = depth;
      this.inString = inString;
      this.escaped = escaped;
      this.last = last;
      if (i === end) {
        if (mode === Mode.Deep) {
          this.deepBytes += end - segment;
          if (this.deepBytes > this.maxFrame && !this.skipOversize)
            throw new FrameTooLargeError(this.maxFrame);
        }
        break;
      }
      i++;
      if (depth > limit) {
        // Too deep: forget the bytes, keep counting them against maxFrame.
        this.mode = Mode.Deep;
        this.deepBytes = i - start;
        start = -1;
      } else if (mode === Mode.Bracket) {
        this.emit(data, start, i);
      } else {
        const total = this.deepBytes + (i - segment);
        this.mode = Mode.Between;
        this.depth = 0;
        this.deepBytes = 0;
        if (total <= this.maxFrame) this.sink.refused('too-deep');
        else if (this.skipOversize) this.sink.refused('too-large');
        else throw new FrameTooLargeError(this.maxFrame);
      }
    }
    if (this.mode === Mode.Opening || this.mode === Mode.Bracket) {
      const partial = end - start;
      if (partial <= this.maxFrame) {
        this.keep(data.subarray(start, end), start === 0 ? owned : null);
      } else if (this.skipOversize) {
        // Skip the rest as a too-deep frame is skipped; its size decides the report.
        // (Only Bracket gets here: Opening turns into garbage before it is this long.)
        this.mode = Mode.Deep;
        this.deepBytes = partial;
      } else {
        throw new FrameTooLargeError(this.maxFrame);
      }
    }
  }

  /** Counts skipped bytes; a long run is reported once per maxFrame bytes. */
  private addGarbage(bytes: number): void {
    this.garbage += bytes;
    while (this.garbage >= this.maxFrame) {
      this.garbage -= this.maxFrame;
      this.sink.refused('garbage');
    }
  }

  private refuseGarbage(): void {
    this.garbage = 0;
    this.sink.refused('garbage');
  }

  private emit(data: Uint8Array, start: number, stop: number): void {
    this.mode = Mode.Between;
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
    if (stop - start <= this.maxFrame) this.sink.frame(data.subarray(start, stop));
    else if (this.skipOversize) this.sink.refused('too-large');
    else throw new FrameTooLargeError(this.maxFrame);
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

/**
 * Whether a whole JSON text (a WebSocket message, which arrives complete and
 * never passes through FrameDecoder) nests deeper than maxDepth. Scans bytes
 * only, so it is safe to run before anything parses or walks the value.
 */
export function nestsDeeperThan(bytes: Uint8Array, maxDepth: number): boolean {
  let depth = 0;
  let inString = false;
  const end = bytes.length;
  for (let i = 0; i < end; i++) {
    const b = bytes[i]!;
    if (inString) {
      if (b === BACKSLASH) i++;
      else if (b === QUOTE) inString = false;
    } else if (b === QUOTE) {
      inString = true;
    } else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
      if (++depth > maxDepth) return true;
    } else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
      depth--;
    }
  }
  return false;
}
