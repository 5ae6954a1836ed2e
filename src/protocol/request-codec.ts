import { Cmd, ErrorCode, type ErrorCodeValue, REQUEST_CODES, type RequestCode } from './codes.js';
import { type FrameRefusal, MAX_DEPTH, nestsDeeperThan } from './frame-decoder.js';
import type { Position, Request, RoomPosition } from './messages.js';
import { atMostChars, hasLoneSurrogate } from './text.js';

/** Why a frame is not a usable request; `ref` is the command it claimed to be, if any. */
export interface RequestError {
  code: ErrorCodeValue;
  message: string;
  ref?: string;
}

export type ParseResult = { ok: true; request: Request } | { ok: false; error: RequestError };

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const requestCodes: ReadonlySet<string> = new Set(REQUEST_CODES);

function fail(code: ErrorCodeValue, message: string, ref?: string): ParseResult {
  return { ok: false, error: ref === undefined ? { code, message } : { code, message, ref } };
}

/** Decodes one frame (as cut by FrameDecoder) into a typed request. Never throws. */
export function parseRequestFrame(frame: Uint8Array): ParseResult {
  let text: string;
  try {
    text = utf8.decode(frame);
  } catch {
    return fail(ErrorCode.INVALID_ENCODING, 'request is not valid UTF-8');
  }
  return parseRequestText(text);
}

/**
 * Like parseRequestFrame, for a request that arrives whole rather than through
 * FrameDecoder (a WebSocket message): nesting is checked before anything parses it.
 */
export function parseRequestMessage(bytes: Uint8Array, maxDepth = MAX_DEPTH): ParseResult {
  if (nestsDeeperThan(bytes, maxDepth)) return tooDeep(maxDepth);
  return parseRequestFrame(bytes);
}

/** What a frame the decoder refused means to the session: one invalid request. */
export function refusedFrame(reason: FrameRefusal): ParseResult {
  switch (reason) {
    case 'garbage':
    case 'blank':
      return fail(ErrorCode.MALFORMED_JSON, 'bytes that were not a whole request were skipped');
    case 'too-deep':
      return tooDeep(MAX_DEPTH);
    case 'too-large':
      return fail(ErrorCode.FRAME_TOO_LARGE, 'request too large');
  }
}

function tooDeep(maxDepth: number): ParseResult {
  return fail(ErrorCode.NESTED_TOO_DEEP, `request nests deeper than ${maxDepth} levels`);
}

const CHAT_PREFIX = '{"cmd":"7","msg":"';
const ROOM_FIELD = '","room":"';
const CID_FIELD = '","cid":"';
/**
 * Characters that need JSON unescaping or are invalid raw in a JSON string,
 * and any surrogate, so that the full path decides whether one stands alone.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: raw control characters are what must be caught
const NEEDS_JSON = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * CHAT exactly as confab's clients write it, `{"cmd":"7","msg":"…"}` with an optional
 * `"room"` and then `"cid"`, every string plain: the request, as toRequest would make
 * it. Anything else (Python's spacing, escapes, other fields or order) is undefined.
 */
function plainChat(text: string): Request | undefined {
  let q = text.indexOf('"', CHAT_PREFIX.length);
  if (q < 0) return undefined;
  const msg = text.slice(CHAT_PREFIX.length, q);
  if (NEEDS_JSON.test(msg)) return undefined;
  const request: Request = { cmd: Cmd.CHAT, msg };
  if (text.startsWith(ROOM_FIELD, q)) {
    const end = text.indexOf('"', q + ROOM_FIELD.length);
    if (end < 0) return undefined;
    const room = text.slice(q + ROOM_FIELD.length, end);
    if (NEEDS_JSON.test(room)) return undefined;
    request.room = room;
    q = end;
  }
  if (text.startsWith(CID_FIELD, q)) {
    const end = text.indexOf('"', q + CID_FIELD.length);
    if (end < 0) return undefined;
    const cid = text.slice(q + CID_FIELD.length, end);
    if (NEEDS_JSON.test(cid)) return undefined;
    request.cid = validCid(cid) ? cid : null;
    q = end;
  }
  return q === text.length - 2 && text.charCodeAt(q + 1) === 0x7d ? request : undefined;
}

/**
 * Most object fields and array elements a request may hold, nested ones included. The
 * largest request (CONNECT with 32 `since` entries and 32 caps) has about 200. JSON.parse
 * of one object with thousands of distinct keys costs milliseconds (V8 makes a new shape
 * per key), an array of thousands of numbers about one, so a stream of such frames, sent
 * as fast as the flood limit allows, would hold the event loop. Below this bound a 64 KB
 * frame costs it about a millisecond at most (all of it distinct long keys).
 */
export const MAX_VALUES = 512;

/**
 * Whether the JSON text holds more than `max` object fields and array elements, counted
 * from its colons and the commas and first elements of its arrays, outside strings. Text
 * shorter than `2 * max` cannot hold that many (each needs at least `0,`), so only long
 * frames are read, once, before JSON.parse reads them again.
 */
export function hasMoreValuesThan(text: string, max: number): boolean {
  if (text.length <= max * 2) return false;
  let values = 0;
  // Per open bracket, whether it is an array's: only there do commas part values.
  const arrays: boolean[] = [];
  let opened = false;
  const end = text.length;
  let i = 0;
  while (i < end) {
    const c = text.charCodeAt(i++);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
    if (opened) {
      // The first element of an array, unless it is empty.
      opened = false;
      if (c !== 0x5d && ++values > max) return true;
    }
    if (c === 0x22) {
      while (i < end) {
        const s = text.charCodeAt(i++);
        if (s === 0x22) break;
        if (s === 0x5c) i++;
      }
    } else if (c === 0x3a || (c === 0x2c && arrays[arrays.length - 1] === true)) {
      if (++values > max) return true;
    } else if (c === 0x5b) {
      arrays.push(true);
      opened = true;
    } else if (c === 0x7b) {
      arrays.push(false);
    } else if (c === 0x5d || c === 0x7d) {
      arrays.pop();
    }
  }
  return false;
}

export function parseRequestText(text: string): ParseResult {
  // Fast path for the commonest request as confab's clients write it; anything
  // else takes JSON.parse.
  if (text.startsWith(CHAT_PREFIX)) {
    const request = plainChat(text);
    if (request !== undefined) return { ok: true, request };
  }
  if (hasMoreValuesThan(text, MAX_VALUES)) {
    return fail(
      ErrorCode.TOO_MANY_VALUES,
      `request has more than ${MAX_VALUES} fields and array elements`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return fail(ErrorCode.MALFORMED_JSON, 'request is not valid JSON');
  }
  return toRequest(value);
}

type Fields = Record<string, unknown>;

function isObject(value: unknown): value is Fields {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A field the client sent. Only own properties count, so a polluted
 * Object.prototype cannot supply one, and "__proto__" (an ordinary own key
 * after JSON.parse) is never looked up through the prototype.
 */
function own(value: Fields, name: string): unknown {
  return Object.hasOwn(value, name) ? value[name] : undefined;
}

/** Caps beyond these bounds are not a client asking for capabilities. */
const MAX_CAPS = 32;
const MAX_CAP_LENGTH = 32;
/** Ten years: longer is "until unbanned", which is what leaving "seconds" out says. */
export const MAX_BAN_SECONDS = 10 * 366 * 24 * 3600;

/**
 * Validates a parsed JSON value as a request. Every field has exactly one
 * accepted type; extra fields are ignored, as the course server does; of
 * duplicate keys the last wins (JSON.parse, like Python's json.loads).
 */
export function toRequest(value: unknown): ParseResult {
  if (!isObject(value)) return fail(ErrorCode.NOT_AN_OBJECT, 'request must be a JSON object');
  const cmd = own(value, 'cmd');
  if (typeof cmd !== 'string') return fail(ErrorCode.INVALID_FIELD, '"cmd" must be a string');
  if (!requestCodes.has(cmd))
    return fail(ErrorCode.UNKNOWN_COMMAND, `unknown command "${cmd}"`, cmd);
  const code = cmd as RequestCode;
  switch (code) {
    case Cmd.CONNECT: {
      const nickname = text(value, 'nickname');
      if (nickname === undefined) return invalid(code, 'nickname');
      const caps = own(value, 'caps');
      // A course client's extra fields are ignored, as the course server does.
      if (caps === undefined) return { ok: true, request: { cmd: code, nickname } };
      if (!isCapList(caps)) {
        return invalid(
          code,
          'caps',
          `an array of at most ${MAX_CAPS} strings of at most ${MAX_CAP_LENGTH} characters`,
        );
      }
      const request: Request = { cmd: code, nickname, caps };
      const resume = optionalText(value, 'resume');
      if (resume === null) return invalid(code, 'resume', 'a string');
      // Longer than any token this version issues: unknown, as a token of a later version
      // would be (docs/protocol.md), so the CONNECT goes on as an ordinary one.
      if (resume !== undefined && resume.length <= MAX_TOKEN_LENGTH) request.resume = resume;
      const since = own(value, 'since');
      if (since !== undefined) {
        if (!Array.isArray(since) || since.length > MAX_SINCE) {
          return invalid(code, 'since', `an array of at most ${MAX_SINCE} {room, epoch, id}`);
        }
        const positions: RoomPosition[] = [];
        for (const entry of since) {
          const position = isObject(entry) ? toPosition(entry) : undefined;
          const room = isObject(entry) ? text(entry, 'room') : undefined;
          if (position === undefined || room === undefined) {
            return invalid(code, 'since', `an array of at most ${MAX_SINCE} {room, epoch, id}`);
          }
          positions.push({ room, ...position });
        }
        request.since = positions;
      }
      const lobby = own(value, 'lobby');
      if (lobby !== undefined && typeof lobby !== 'boolean')
        return invalid(code, 'lobby', 'true or false');
      if (lobby !== undefined) request.lobby = lobby;
      return { ok: true, request };
    }
    case Cmd.WHISPER: {
      const to = text(value, 'to');
      if (to === undefined) return invalid(code, 'to');
      const msg = text(value, 'msg');
      if (msg === undefined) return invalid(code, 'msg');
      return { ok: true, request: { cmd: code, to, msg } };
    }
    case Cmd.RENAME: {
      const newNickname = text(value, 'newNickname');
      if (newNickname === undefined) return invalid(code, 'newNickname');
      return { ok: true, request: { cmd: code, newNickname } };
    }
    case Cmd.RTT: {
      // What the course client sends, time.time(); 1e400 parses to Infinity,
      // which has no JSON form to echo.
      const beginTime = own(value, 'beginTime');
      if (typeof beginTime !== 'number' || !Number.isFinite(beginTime))
        return invalid(code, 'beginTime', 'a finite number');
      return { ok: true, request: { cmd: code, beginTime } };
    }
    case Cmd.CHAT: {
      const msg = text(value, 'msg');
      if (msg === undefined) return invalid(code, 'msg');
      const request: Request = { cmd: code, msg };
      const room = optionalRoom(value);
      if (room !== undefined) request.room = room;
      const cid = optionalText(value, 'cid');
      // Like "room": a client without "history" may send anything here.
      if (cid !== undefined) request.cid = cid === null || !validCid(cid) ? null : cid;
      // And without "actions", here.
      if (Object.hasOwn(value, 'action'))
        request.action = typeof value.action === 'boolean' ? value.action : null;
      return { ok: true, request };
    }
    case Cmd.OPER: {
      const name = text(value, 'name');
      if (name === undefined) return invalid(code, 'name');
      const password = text(value, 'password');
      if (password === undefined) return invalid(code, 'password');
      return { ok: true, request: { cmd: code, name, password } };
    }
    case Cmd.KICK: {
      const nickname = text(value, 'nickname');
      if (nickname === undefined) return invalid(code, 'nickname');
      const reason = optionalText(value, 'reason');
      if (reason === null) return invalid(code, 'reason');
      return {
        ok: true,
        request: reason === undefined ? { cmd: code, nickname } : { cmd: code, nickname, reason },
      };
    }
    case Cmd.BAN: {
      const mask = text(value, 'mask');
      if (mask === undefined) return invalid(code, 'mask');
      const reason = optionalText(value, 'reason');
      if (reason === null) return invalid(code, 'reason');
      const seconds = own(value, 'seconds');
      if (
        seconds !== undefined &&
        (typeof seconds !== 'number' ||
          !Number.isInteger(seconds) ||
          seconds < 1 ||
          seconds > MAX_BAN_SECONDS)
      )
        return invalid(code, 'seconds', `a whole number from 1 to ${MAX_BAN_SECONDS}`);
      const request: Request = { cmd: code, mask };
      if (seconds !== undefined) request.seconds = seconds;
      if (reason !== undefined) request.reason = reason;
      return { ok: true, request };
    }
    case Cmd.UNBAN: {
      const mask = text(value, 'mask');
      if (mask === undefined) return invalid(code, 'mask');
      return { ok: true, request: { cmd: code, mask } };
    }
    case Cmd.USERS: {
      const room = optionalRoom(value);
      return { ok: true, request: room === undefined ? { cmd: code } : { cmd: code, room } };
    }
    case Cmd.JOIN_ROOM: {
      const room = text(value, 'room');
      if (room === undefined) return invalid(code, 'room');
      const since = own(value, 'since');
      if (since === undefined) return { ok: true, request: { cmd: code, room } };
      const position = isObject(since) ? toPosition(since) : undefined;
      if (position === undefined) return invalid(code, 'since', 'an object {epoch, id}');
      return { ok: true, request: { cmd: code, room, since: position } };
    }
    case Cmd.HISTORY: {
      const room = text(value, 'room');
      if (room === undefined) return invalid(code, 'room');
      const request: Request = { cmd: code, room };
      const before = own(value, 'before');
      if (before !== undefined) {
        if (!isId(before)) return invalid(code, 'before', 'a whole number of at least 0');
        request.before = before;
      }
      const limit = own(value, 'limit');
      if (limit !== undefined) {
        if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > 100)
          return invalid(code, 'limit', 'a whole number from 1 to 100');
        request.limit = limit;
      }
      return { ok: true, request };
    }
    case Cmd.PART_ROOM: {
      const room = text(value, 'room');
      if (room === undefined) return invalid(code, 'room');
      return { ok: true, request: { cmd: code, room } };
    }
    case Cmd.ROOMS:
    case Cmd.EXIT:
    case Cmd.VERSION:
    case Cmd.BANS:
      return { ok: true, request: { cmd: code } };
  }
}

/** A string field that is well-formed UTF-16, so it can be re-encoded as UTF-8 unchanged. */
function text(value: Fields, name: string): string | undefined {
  const field = own(value, name);
  return typeof field === 'string' && !hasLoneSurrogate(field) ? field : undefined;
}

/** An optional text field: undefined when absent, null when present but not well-formed text. */
function optionalText(value: Fields, name: string): string | undefined | null {
  if (own(value, name) === undefined) return undefined;
  return text(value, name) ?? null;
}

/**
 * The optional "room" of CHAT and USERS. A course client's extra field must
 * not change what it gets, so a malformed one is marked (null) rather than
 * refused here; the core refuses it only from clients with "rooms".
 */
function optionalRoom(value: Fields): string | null | undefined {
  if (!Object.hasOwn(value, 'room')) return undefined;
  return text(value, 'room') ?? null;
}

/** Resume tokens are short; anything longer is not one. */
const MAX_TOKEN_LENGTH = 128;
/** One position per room a client can be in. */
const MAX_SINCE = 32;
const MAX_CID_LENGTH = 64;
const MAX_EPOCH_LENGTH = 64;

function isId(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function validCid(cid: string): boolean {
  return cid.length >= 1 && atMostChars(cid, MAX_CID_LENGTH);
}

/** {epoch, id}, or undefined when either is missing or malformed. */
function toPosition(value: Fields): Position | undefined {
  const epoch = text(value, 'epoch');
  const id = own(value, 'id');
  if (epoch === undefined || epoch.length > MAX_EPOCH_LENGTH || !isId(id)) return undefined;
  return { epoch, id };
}

function isCapList(caps: unknown): caps is string[] {
  if (!Array.isArray(caps) || caps.length > MAX_CAPS) return false;
  for (const c of caps) if (typeof c !== 'string' || c.length > MAX_CAP_LENGTH) return false;
  return true;
}

function invalid(cmd: string, field: string, what = 'a well-formed string'): ParseResult {
  return fail(ErrorCode.INVALID_FIELD, `"${field}" must be ${what}`, cmd);
}

/** Encodes a request the way confab's client sends it: one JSON object and "\n". */
export function encodeRequest(request: Request): string {
  return `${JSON.stringify(request)}\n`;
}
