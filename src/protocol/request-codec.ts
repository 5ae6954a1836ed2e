import { Cmd, ErrorCode, type ErrorCodeValue, REQUEST_CODES, type RequestCode } from './codes.js';
import type { JsonValue, Request } from './messages.js';

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

const CHAT_PREFIX = '{"cmd":"7","msg":"';
const CHAT_SUFFIX = '"}';
/** Characters that need JSON unescaping or are invalid raw in a JSON string. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: raw control characters are what must be caught
const NEEDS_JSON = /["\\\u0000-\u001f]/;

export function parseRequestText(text: string): ParseResult {
  // Fast path for the commonest request exactly as confab's clients write it;
  // anything else (Python's spacing, escapes, extra fields) takes JSON.parse.
  if (text.startsWith(CHAT_PREFIX) && text.endsWith(CHAT_SUFFIX) && text.length >= 20) {
    const msg = text.slice(CHAT_PREFIX.length, text.length - CHAT_SUFFIX.length);
    if (!NEEDS_JSON.test(msg)) return { ok: true, request: { cmd: Cmd.CHAT, msg } };
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

/** Validates a parsed JSON value as a request. Extra fields are ignored, as the course server does. */
export function toRequest(value: unknown): ParseResult {
  if (!isObject(value)) return fail(ErrorCode.NOT_AN_OBJECT, 'request must be a JSON object');
  const cmd = value.cmd;
  if (typeof cmd !== 'string') return fail(ErrorCode.INVALID_FIELD, '"cmd" must be a string');
  if (!requestCodes.has(cmd))
    return fail(ErrorCode.UNKNOWN_COMMAND, `unknown command "${cmd}"`, cmd);
  const code = cmd as RequestCode;
  switch (code) {
    case Cmd.CONNECT: {
      const nickname = stringField(value, 'nickname');
      if (nickname === undefined) return missing(code, 'nickname');
      const caps = value.caps;
      if (caps === undefined) return { ok: true, request: { cmd: code, nickname } };
      if (!Array.isArray(caps) || !caps.every((c) => typeof c === 'string')) {
        return fail(ErrorCode.INVALID_FIELD, '"caps" must be an array of strings', code);
      }
      return { ok: true, request: { cmd: code, nickname, caps } };
    }
    case Cmd.WHISPER: {
      const to = stringField(value, 'to');
      if (to === undefined) return missing(code, 'to');
      const msg = stringField(value, 'msg');
      if (msg === undefined) return missing(code, 'msg');
      return { ok: true, request: { cmd: code, to, msg } };
    }
    case Cmd.RENAME: {
      const newNickname = stringField(value, 'newNickname');
      if (newNickname === undefined) return missing(code, 'newNickname');
      return { ok: true, request: { cmd: code, newNickname } };
    }
    case Cmd.RTT: {
      if (!('beginTime' in value)) return missing(code, 'beginTime', 'a value');
      return { ok: true, request: { cmd: code, beginTime: value.beginTime as JsonValue } };
    }
    case Cmd.CHAT: {
      const msg = stringField(value, 'msg');
      if (msg === undefined) return missing(code, 'msg');
      return { ok: true, request: { cmd: code, msg } };
    }
    case Cmd.USERS:
    case Cmd.EXIT:
    case Cmd.VERSION:
      return { ok: true, request: { cmd: code } };
  }
}

function stringField(value: Fields, name: string): string | undefined {
  const field = value[name];
  return typeof field === 'string' ? field : undefined;
}

function missing(cmd: string, field: string, what = 'a string'): ParseResult {
  return fail(ErrorCode.INVALID_FIELD, `"${field}" must be ${what}`, cmd);
}

/** Encodes a request the way confab's client sends it: one JSON object and "\n". */
export function encodeRequest(request: Request): string {
  return `${JSON.stringify(request)}\n`;
}
