/**
 * What the hostile attackers send: fast-check arbitraries for request frames
 * (as bytes) and for whole batches of attacks. Shared by the CI test and
 * `npm run fuzz`; a batch is a plain value, so a failing one can be printed
 * and replayed from its seed.
 */
import fc from 'fast-check';

/**
 * tcp, tls, ws: a client of the chat protocol. http: raw bytes to the HTTP
 * port (request heads, upgrades, hand-made WebSocket frames). tls-plain:
 * raw bytes to the TLS port with no TLS at all.
 */
export type Transport = 'tcp' | 'tls' | 'ws' | 'http' | 'tls-plain';

/** How a WebSocket attacker frames each piece. */
export type WsFraming = 'text' | 'binary' | 'fragmented';

export interface Attack {
  transport: Transport;
  /** Send a valid CONNECT and wait for the answer first, or attack the greeting. */
  joined: boolean;
  /** Ask for every capability when joining (opted-in clients get "90" replies, rooms and history). */
  caps: boolean;
  /**
   * Joined with caps: this many more connections then CONNECT with the
   * attacker's resume token at once (racing each other and the attacker's
   * own unfinished requests), and send the pieces again.
   */
  resumers: number;
  /** The "since" those resuming connections send. */
  since: unknown[];
  /** The hostile input, piece by piece (each piece one WebSocket message). */
  pieces: Uint8Array[];
  /** Stream transports: the payload is cut into writes of these sizes, cycled. */
  chunks: number[];
  /** Stream transports: let the event loop turn between writes so they leave as separate segments. */
  spread: boolean;
  wsFraming: WsFraming;
  /** How the attacker leaves: reset, half-close, EXIT, or close after a pause. */
  ending: 'destroy' | 'end' | 'exit' | 'linger';
  /** Source address, anywhere in 127.0.0.0/8: the server counts connections per address. */
  from: string;
  /** This many copies at once (only when the payload is small): races at join, leave and capacity. */
  swarm: number;
}

export interface Batch {
  attacks: Attack[];
}

const enc = new TextEncoder();
const bytes = (text: string): Uint8Array => enc.encode(text);
/** The bytes of `parts`, one after another. */
export const concat = (parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

/** The frame limit the server under attack runs with (the default). */
export const MAX_FRAME = 65536;

/** Every capability: opted-in attackers reach rooms, history and resume too. */
export const ALL_CAPS = ['errors', 'renames', 'whispers', 'rooms', 'history', 'moderation'];

/** Fields of each request, as docs/protocol.md lists them. */
const FIELDS: Record<string, string[]> = {
  '0': ['nickname', 'caps', 'resume', 'since', 'lobby'],
  '1': ['room'],
  '2': ['to', 'msg'],
  '3': [],
  '4': [],
  '5': ['newNickname'],
  '6': ['beginTime'],
  '7': ['msg', 'room', 'cid'],
  '92': ['name', 'password'],
  '94': ['nickname', 'reason'],
  '95': ['mask', 'seconds', 'reason'],
  '96': ['mask'],
  '97': [],
  '100': ['room', 'since'],
  '102': ['room'],
  '104': [],
  '106': ['room', 'before', 'limit'],
};
/** Plausible values, so that only the field under attack is wrong ("cmd.field" first). */
const GOOD: Record<string, string> = {
  nickname: '"mallory"',
  caps: JSON.stringify(ALL_CAPS),
  resume: '"bm90LWEtcmVhbC10b2tlbg"',
  since: '[{"room":"lobby","epoch":"e","id":1}]',
  '100.since': '{"epoch":"e","id":1}',
  lobby: 'true',
  to: '"by-course"',
  msg: '"hi"',
  newNickname: '"mallory2"',
  beginTime: '1590314400123.4568',
  room: '"lobby"',
  '100.room': '"den"',
  '102.room': '"den"',
  cid: '"c-1"',
  before: '10',
  limit: '50',
  name: '"op"',
  password: '"pw"',
  reason: '"because"',
  mask: '"by-course"',
  seconds: '60',
};
const good = (cmd: string, field: string): string => GOOD[`${cmd}.${field}`] ?? GOOD[field]!;

/** Names that break a server keeping members in a plain object. */
const PROTO_NAMES = [
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  'valueOf',
  '__defineGetter__',
];

/** JSON texts (or near-JSON) with a reputation for breaking parsers and printers. */
const NASTY_VALUES = [
  'null',
  'true',
  'false',
  '0',
  '-0',
  '-0.0',
  '1',
  '-1',
  '1e400',
  '-1e400',
  '1e-400',
  '0.1e99999',
  '9007199254740993',
  '18446744073709551616',
  '-9223372036854775809',
  '1.7976931348623157e308',
  '5e-324',
  'NaN',
  '-NaN',
  'Infinity',
  '-Infinity',
  'undefined',
  '0x10',
  '01',
  '.5',
  '1.',
  '+1',
  '[]',
  '{}',
  '[null]',
  '{"a":1}',
  '{"__proto__":{"polluted":1}}',
  '{"constructor":{"prototype":{"polluted":1}}}',
  '""',
  '"\\ud800"',
  '"\\udfff"',
  '"\\udc00\\ud800"',
  '"\\ud83d"',
  '"\\u0000"',
  '"\\u001b[2J\\u001b]0;pwned\\u0007"',
  '"\\u009b31m"',
  '"\\u202egnp.exe"',
  '"\\u2028\\u2029"',
  '"\\ufeff"',
  '"\\uffff\\ufffe"',
  '"\\\\"',
  '"\\x41"',
  '"\\u12"',
  '"\\',
  '"unterminated',
  ...PROTO_NAMES.map((n) => `"${n}"`),
];

const digits = (n: number) => '9'.repeat(n);

/** A JSON value nested `depth` deep, closed or left open. */
function nested(depth: number, style: 'array' | 'object' | 'mixed', close: boolean): string {
  const open = style === 'array' ? '[' : style === 'object' ? '{"a":' : '[{"a":';
  const shut = style === 'array' ? ']' : style === 'object' ? '}' : '}]';
  const times = style === 'mixed' ? Math.ceil(depth / 2) : depth;
  return open.repeat(times) + (close ? `1${shut.repeat(times)}` : '');
}

const depthArb = fc.oneof(
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 200 }) },
  { weight: 3, arbitrary: fc.integer({ min: 1000, max: 50_000 }) },
);

const nestedArb = fc
  .record({
    depth: depthArb,
    style: fc.constantFrom('array' as const, 'object' as const, 'mixed' as const),
    close: fc.boolean(),
  })
  .map(({ depth, style, close }) => {
    // Object nesting costs five bytes a level: keep most such frames under --max-frame.
    const d = style === 'array' ? depth : Math.min(depth, 13_000);
    return nested(d, style, close);
  });

/** A value for one field: the wrong type, the wrong size, or not JSON at all. */
const hostileValueArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...NASTY_VALUES) },
  { weight: 2, arbitrary: fc.integer({ min: 4097, max: 70_000 }).map((n) => `"${'x'.repeat(n)}"`) },
  { weight: 1, arbitrary: fc.integer({ min: 300, max: 30_000 }).map(digits) },
  { weight: 1, arbitrary: fc.integer({ min: 300, max: 30_000 }).map((n) => `1e${digits(n)}`) },
  { weight: 2, arbitrary: nestedArb },
  { weight: 2, arbitrary: fc.json({ maxDepth: 4 }) },
  {
    weight: 2,
    arbitrary: fc.string({ unit: 'binary', maxLength: 64 }).map((s) => JSON.stringify(s)),
  },
  {
    weight: 1,
    arbitrary: fc
      .array(fc.string({ maxLength: 8 }), { maxLength: 3000 })
      .map((a) => JSON.stringify(a)),
  },
);

const cmdArb = fc.constantFrom(...Object.keys(FIELDS));

/** Every command with one of its fields (or "cmd" itself) replaced, dropped or duplicated. */
const wrongFieldArb = fc
  .record({
    cmd: cmdArb,
    pick: fc.nat(),
    value: hostileValueArb,
    how: fc.constantFrom('replace', 'replace', 'replace', 'drop', 'duplicate', 'cmd'),
  })
  .map(({ cmd, pick, value, how }) => {
    const fields = FIELDS[cmd]!;
    const target = fields.length === 0 ? undefined : fields[pick % fields.length];
    const parts = [how === 'cmd' ? `"cmd":${value}` : `"cmd":"${cmd}"`];
    for (const f of fields) {
      if (f === target && how === 'drop') continue;
      if (f === target && how === 'replace') parts.push(`"${f}":${value}`);
      else if (f === target && how === 'duplicate')
        parts.push(`"${f}":${good(cmd, f)}`, `"${f}":${value}`);
      else parts.push(`"${f}":${good(cmd, f)}`);
    }
    if (target === undefined && how !== 'cmd') parts.push(`"extra":${value}`);
    return bytes(`{${parts.join(',')}}`);
  });

/** Thousands of keys or elements: wide rather than deep. */
const wideArb = fc
  .record({
    n: fc.integer({ min: 100, max: 6000 }),
    kind: fc.constantFrom('keys', 'same-key', 'array', 'proto-keys'),
    cmd: cmdArb,
  })
  .map(({ n, kind, cmd }) => {
    const base = `"cmd":"${cmd}",${FIELDS[cmd]!.map((f) => `"${f}":${good(cmd, f)}`).join(',')}`;
    const head = base.endsWith(',') ? base.slice(0, -1) : base;
    const body = Array.from({ length: n }, (_, i) => {
      switch (kind) {
        case 'keys':
          return `"k${i}":${i}`;
        case 'same-key':
          return i % 2 === 0 ? `"cmd":"${i % 9}"` : `"msg":${i}`;
        case 'proto-keys':
          return `"${PROTO_NAMES[i % PROTO_NAMES.length]}":{"cmd":"0"}`;
        default:
          return '0';
      }
    });
    return bytes(
      kind === 'array'
        ? `{${head},"beginTime":[${body.join(',')}]}`
        : `{${head},${body.join(',')}}`,
    );
  });

/** Byte sequences no UTF-8 decoder may accept, CESU-8 surrogates among them. */
const BAD_UTF8: number[][] = [
  [0xff],
  [0xfe, 0xff],
  [0x80],
  [0xbf, 0xbf],
  [0xc0, 0xaf],
  [0xc1, 0xbf],
  [0xe0, 0x80, 0xaf],
  [0xed, 0xa0, 0x80],
  [0xed, 0xbf, 0xbf],
  [0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80],
  [0xf4, 0x90, 0x80, 0x80],
  [0xf8, 0x88, 0x80, 0x80, 0x80],
  [0xe2, 0x82],
  [0xf0, 0x9f, 0x98],
  [0xc3],
];

/** Requests as a joined client might send them, with text that is valid but unkind. */
const textArb = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 200 }),
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.constantFrom(
    '😀'.repeat(1000),
    '한'.repeat(2000),
    'e\u0301'.repeat(500),
    '\u001b[31mred\u001b[0m\u0007',
    '\r\n{"cmd":"3"}\n',
    '"}{"cmd":"3"}',
    'i hate professor',
    'I HATE PROFESSOR!',
    '\u0000',
  ),
);

/**
 * Runs of combining marks that normalising sorts in time by the square of their length:
 * two classes alternating, symbols and zero-width spaces that folding turns into one run.
 */
const MARK_RUNS = [
  `a${'\u0301\u0316'.repeat(10_000)}`,
  `a${'\u0301\u0316'.repeat(511)}`,
  `a${'\u0301\u0316\u200b'.repeat(340)}`,
  `a${'\u309b\u309c'.repeat(500)}`,
];

/** Room names: the lobby and its look-alikes, names at and over the limit, anything. */
const roomArb = fc.oneof(
  fc.constantFrom(
    'lobby',
    'LOBBY',
    '\u217Cobby',
    'den',
    'Den',
    'd\u0435n',
    'ｄｅｎ',
    'r'.repeat(64),
    'r'.repeat(65),
    '',
    ' den',
    '\u202Eden',
    ...PROTO_NAMES,
    ...MARK_RUNS,
  ),
  fc.string({ unit: 'binary', maxLength: 70 }),
);

/** Ids and counts: the edges of "a whole number", and what is not one. */
const idArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(0, 1, -1, -0, 1.5, 100, 101, 2 ** 53 - 1, 2 ** 53, 1e300, '1', null, [1]),
  fc.nat(),
  fc.double(),
);

const epochArb = fc.oneof(
  fc.constantFrom('', 'e', 'x'.repeat(64), 'x'.repeat(65), '\ud800'),
  fc.string({ unit: 'binary', maxLength: 70 }),
);

/** One {room?, epoch, id}, sometimes with a field missing or wrong. */
const positionArb = fc
  .record(
    { room: fc.oneof(roomArb, idArb), epoch: fc.oneof(epochArb, idArb), id: idArb },
    { requiredKeys: [] },
  )
  .map((p) => p as Record<string, unknown>);

/** "since" lists: empty, at and over the 32 entries allowed, one room many times. */
const sinceArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.array(positionArb, { maxLength: 34 }),
  fc
    .tuple(roomArb, fc.integer({ min: 1, max: 34 }))
    .map(([room, n]) => Array.from({ length: n }, (_, i) => ({ room, epoch: 'e', id: i }))),
  idArb,
);

const cidArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom('', 'c', 'x'.repeat(64), 'x'.repeat(65), '\ud800', '\udfff\ud800', 'c-1'),
  fc.string({ unit: 'binary', maxLength: 70 }),
  idArb,
);

const tokenArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom('', 'x'.repeat(128), 'x'.repeat(129), '\ud800'),
  fc.base64String({ maxLength: 32 }),
  idArb,
);

/** Some of `fields`, each present or not. */
const someOf = <T extends Record<string, fc.Arbitrary<unknown>>>(fields: T) =>
  fc.record(fields, { requiredKeys: [] });

const validishArb = fc
  .record({
    cmd: cmdArb,
    text: textArb,
    name: fc.oneof(
      fc.constantFrom(
        ...PROTO_NAMES,
        ...MARK_RUNS,
        'by-course',
        'BY-COURSE',
        'sender',
        'by-web',
        'x'.repeat(33),
      ),
      fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }),
    ),
    time: fc.oneof(
      fc.double(),
      fc.json({ maxDepth: 3 }).map((j) => JSON.parse(j) as unknown),
    ),
    room: roomArb,
    connect: someOf({
      caps: fc.constantFrom(ALL_CAPS, ['rooms'], ['history'], ['rooms', 'history'], []),
      resume: tokenArb,
      since: sinceArb,
      lobby: fc.constantFrom<unknown>(false, true, 0, 'false'),
    }),
    chat: someOf({ room: roomArb, cid: cidArb }),
    join: someOf({ since: fc.oneof(positionArb, sinceArb) }),
    page: someOf({ before: idArb, limit: idArb }),
  })
  .map(({ cmd, text, name, time, room, connect, chat, join, page }) => {
    switch (cmd) {
      case '0':
        return { cmd, nickname: name, ...connect };
      case '1':
        return { cmd, room };
      case '2':
        return { cmd, to: name, msg: text };
      case '5':
        return { cmd, newNickname: name };
      case '6':
        return { cmd, beginTime: time };
      case '7':
        return { cmd, msg: text, ...chat };
      case '94':
        return { cmd, nickname: name, reason: text };
      case '95':
        return { cmd, mask: name, seconds: time };
      case '100':
        return { cmd, room, ...join };
      case '102':
        return { cmd, room };
      case '106':
        return { cmd, room, ...page };
      default:
        return { cmd };
    }
  })
  .map((request) => bytes(`${JSON.stringify(request)}\n`));

/** Rooms a script moves between: few, so that its requests meet in them. */
const scriptRoomArb = fc.constantFrom('lobby', 'den', 'Den', 'd\u0435n', 'attic', 'cellar');

/** One well-formed request of a member with rooms and history. */
const scriptStepArb: fc.Arbitrary<object> = fc.oneof(
  fc.record(
    {
      cmd: fc.constant('100'),
      room: scriptRoomArb,
      since: fc.record({ epoch: fc.constantFrom('e', ''), id: fc.nat(300) }),
    },
    { requiredKeys: ['cmd', 'room'] },
  ),
  fc.record(
    {
      cmd: fc.constant('7'),
      msg: fc.string({ maxLength: 40 }),
      room: scriptRoomArb,
      cid: fc.constantFrom('a', 'b', 'c'),
    },
    { requiredKeys: ['cmd', 'msg'] },
  ),
  fc.record(
    {
      cmd: fc.constant('106'),
      room: scriptRoomArb,
      before: fc.nat(300),
      limit: fc.integer({ min: 1, max: 100 }),
    },
    { requiredKeys: ['cmd', 'room'] },
  ),
  fc.record({ cmd: fc.constant('102'), room: scriptRoomArb }),
  fc.record({ cmd: fc.constant('1'), room: scriptRoomArb }, { requiredKeys: ['cmd'] }),
  fc.record({ cmd: fc.constant('5'), newNickname: fc.constantFrom('m1', 'm2', 'M1', 'by-course') }),
  fc.record({
    cmd: fc.constant('2'),
    to: fc.constantFrom('by-course', 'by-web'),
    msg: fc.string(),
  }),
  fc
    .record({ cmd: fc.constantFrom('104', '4', '6') })
    .map((r) => (r.cmd === '6' ? { ...r, beginTime: 1 } : r)),
);

/** A well-formed "since" entry: rooms a script uses or any name, ids anywhere. */
const resumePositionArb = fc.record({
  room: fc.oneof(scriptRoomArb, roomArb),
  epoch: fc.oneof(fc.constantFrom('e', ''), epochArb),
  id: fc.oneof(fc.nat(300), fc.constantFrom(2 ** 53 - 1)),
});

/** Many well-formed requests pipelined in one piece: the backlog, replays and resumes at work. */
const scriptArb = fc
  .array(scriptStepArb, { minLength: 1, maxLength: 40 })
  .map((steps) => bytes(steps.map((r) => `${JSON.stringify(r)}\n`).join('')));

/** A frame with bad UTF-8 spliced in, raw or inside a string. */
const badUtf8Arb = fc
  .record({
    frame: fc.oneof(validishArb, wrongFieldArb),
    at: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }),
    seq: fc.array(fc.constantFrom(...BAD_UTF8), { minLength: 1, maxLength: 4 }),
  })
  .map(({ frame, at, seq }) => {
    let out = frame;
    for (const [i, s] of seq.entries()) {
      // Somewhere inside the frame; strings are where real clients put text.
      const p = 1 + ((at[i % at.length] ?? 0) % Math.max(1, out.length - 1));
      out = concat([out.subarray(0, p), Uint8Array.from(s), out.subarray(p)]);
    }
    return out;
  });

/** Raw control characters where JSON forbids them, and escaped ones where it allows them. */
const controlArb = fc
  .record({
    cmd: fc.constantFrom('2', '5', '7', '0'),
    codes: fc.array(fc.integer({ min: 0, max: 0x1f }), { minLength: 1, maxLength: 20 }),
    raw: fc.boolean(),
  })
  .map(({ cmd, codes, raw }) => {
    const s = codes
      .map((c) => (raw ? String.fromCharCode(c) : `\\u${c.toString(16).padStart(4, '0')}`))
      .join('');
    const field = cmd === '0' ? 'nickname' : cmd === '5' ? 'newNickname' : 'msg';
    const to = cmd === '2' ? '"to":"by-course",' : '';
    return bytes(`{"cmd":"${cmd}",${to}"${field}":"a${s}b"}`);
  });

/** __proto__, constructor and friends as keys, commands and names. */
const protoArb = fc.constantFrom(
  ...[
    '{"cmd":"7","msg":"x","__proto__":{"cmd":"0","nickname":"x"}}',
    '{"__proto__":{"cmd":"7","msg":"polluted"}}',
    '{"__proto__":{"msg":"polluted"},"cmd":"7"}',
    '{"constructor":{"prototype":{"cmd":"7"}},"cmd":"1"}',
    '{"cmd":"__proto__"}',
    '{"cmd":"constructor"}',
    '{"cmd":"toString"}',
    '{"cmd":"hasOwnProperty"}',
    '{"cmd":"0","nickname":"__proto__"}',
    '{"cmd":"0","nickname":"constructor"}',
    '{"cmd":"0","nickname":"toString"}',
    '{"cmd":"5","newNickname":"__proto__"}',
    '{"cmd":"5","newNickname":"constructor"}',
    '{"cmd":"5","newNickname":"hasOwnProperty"}',
    '{"cmd":"2","to":"__proto__","msg":"x"}',
    '{"cmd":"2","to":"constructor","msg":"x"}',
    '{"cmd":"2","to":"toString","msg":"x"}',
    '{"cmd":"0","nickname":"x","caps":["__proto__","constructor","toString"]}',
    '{"cmd":"0","nickname":"x","caps":{"length":1000000000}}',
    '{"cmd":"0","nickname":"x","caps":"errors"}',
  ].map(bytes),
);

/** Duplicate keys: which one wins must not matter for safety. */
const duplicateArb = fc.constantFrom(
  ...[
    '{"cmd":"7","cmd":"0","nickname":"dup"}',
    '{"cmd":"0","nickname":"dup","nickname":{"a":1}}',
    '{"cmd":"0","nickname":{"a":1},"nickname":"dup"}',
    '{"cmd":"7","msg":"a","msg":null}',
    '{"cmd":"6","beginTime":1,"beginTime":[[[[]]]]}',
    '{"cmd":"2","to":"by-course","to":null,"msg":"x"}',
    '{"cmd":"5","newNickname":"a","newNickname":"by-course"}',
  ].map(bytes),
);

/** Garbage between frames, with and without a newline to resynchronise on. */
const garbageArb = fc.oneof(
  fc
    .record({ junk: fc.uint8Array({ maxLength: 3000 }), newline: fc.boolean() })
    .map(({ junk, newline }) => (newline ? concat([junk, bytes('\n')]) : junk)),
  fc.constantFrom(
    ...[
      '}}}]]]\n',
      ']',
      '}',
      '"',
      '\\',
      '{"a',
      '{"cmd":"7","msg":"never closed',
      '["\\"]',
      '\r\r\r\n\n\t \n',
      'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
      '\u0000\u0000\u0000\u0000',
      '\ufeff{"cmd":"4"}',
      'null\n42\n"x"\n[1,2]\n',
      '{}{}{}[][][]',
      '{"cmd":"4"}garbage{"cmd":"4"}',
    ].map(bytes),
  ),
);

/** Frames at, just under and just over --max-frame, in each framing mode. */
const edgeSizeArb = fc
  .record({
    delta: fc.integer({ min: -2, max: 2 }),
    kind: fc.constantFrom('chat', 'line', 'array', 'string-open'),
  })
  .map(({ delta, kind }) => {
    const size = MAX_FRAME + delta;
    switch (kind) {
      case 'chat': {
        const head = '{"cmd":"7","msg":"';
        return bytes(`${head}${'m'.repeat(size - head.length - 2)}"}`);
      }
      case 'line':
        return bytes(`${'g'.repeat(size)}\n`);
      case 'array':
        // "[0,0,…,0]", or "[0,…,0, 0]" to make an even size.
        return bytes(
          size % 2 === 1
            ? `[${'0,'.repeat((size - 3) / 2)}0]`
            : `[${'0,'.repeat((size - 4) / 2)} 0]`,
        );
      default:
        return bytes(`{"cmd":"7","msg":"${'s'.repeat(size)}`);
    }
  });

/** The RTT echo of a deep value, the case that once killed the server, in its own right. */
const deepRttArb = depthArb.map((d) =>
  bytes(`{"cmd":"6","beginTime":${nested(d, 'array', true)}}`),
);

export const pieceArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 3, arbitrary: nestedArb.map((n) => bytes(`{"cmd":"6","beginTime":${n}}`)) },
  { weight: 1, arbitrary: nestedArb.map(bytes) },
  { weight: 1, arbitrary: deepRttArb },
  { weight: 4, arbitrary: wrongFieldArb },
  { weight: 2, arbitrary: wideArb },
  { weight: 3, arbitrary: badUtf8Arb },
  { weight: 2, arbitrary: controlArb },
  { weight: 2, arbitrary: protoArb },
  { weight: 1, arbitrary: duplicateArb },
  { weight: 3, arbitrary: garbageArb },
  { weight: 1, arbitrary: edgeSizeArb },
  { weight: 4, arbitrary: validishArb },
  { weight: 4, arbitrary: scriptArb },
);

/** A request target the URL parser may choke on. */
const targetArb = fc.oneof(
  fc.constantFrom(
    '/ws',
    '/ws',
    '/',
    '/healthz',
    '/metrics',
    'http://[',
    'http://[::1',
    'http://a:b@[::1]:99999/ws',
    'http:',
    '//',
    '///ws',
    '*',
    '/ws?x=%ff%fe',
    '/%00',
    '/%',
    '/ws#x',
    '/../../../etc/passwd',
    '/index.html/..%2f..%2f',
    '\\ws',
    'ws://127.0.0.1/ws',
    'x:/ws',
  ),
  fc
    .string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 40 })
    .map((t) => t.replace(/[\s]/g, '')),
  fc.integer({ min: 1000, max: 12_000 }).map((n) => `/${'a'.repeat(n)}`),
);

const headerArb = fc.constantFrom(
  'Host: 127.0.0.1',
  'Host: [',
  'Host: ',
  'Upgrade: websocket',
  'Upgrade: websocket',
  'Upgrade: WebSocket, h2c',
  'Upgrade: nonsense',
  'Connection: Upgrade',
  'Connection: Upgrade',
  'Connection: keep-alive, Upgrade',
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
  'Sec-WebSocket-Key: !!',
  'Sec-WebSocket-Version: 13',
  'Sec-WebSocket-Version: 13',
  'Sec-WebSocket-Version: 8',
  'Sec-WebSocket-Version: 99999999999999999999',
  'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits',
  'Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=1',
  'Sec-WebSocket-Protocol: a, , b',
  'Origin: null',
  'Origin: http://[',
  'Origin: http://evil.example',
  'Origin: http://127.0.0.1',
  'Content-Length: 5',
  'Content-Length: -1',
  'Content-Length: 99999999999999999999',
  'Transfer-Encoding: chunked',
  `X-Long: ${'h'.repeat(9000)}`,
  'Bad Header',
  ': empty',
  'Host: a\u0000b',
);

/** A WebSocket frame as a client sends it (masked), or deliberately not. */
const wsFrameArb = fc
  .record({
    payload: fc.oneof(pieceArb, fc.uint8Array({ maxLength: 200 })),
    opcode: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom(1, 2) },
      { weight: 3, arbitrary: fc.constantFrom(0, 8, 9, 10) },
      { weight: 1, arbitrary: fc.integer({ min: 3, max: 15 }) },
    ),
    fin: fc.boolean(),
    rsv: fc.constantFrom(0, 0, 0, 0x40, 0x20, 0x10),
    masked: fc.constantFrom(true, true, true, false),
    length: fc.constantFrom('true', 'true', 'true', 'huge', 'short', 'wide'),
  })
  .map(({ payload, opcode, fin, rsv, masked, length }) => {
    const n = payload.length;
    const head: number[] = [(fin ? 0x80 : 0) | rsv | opcode];
    const m = masked ? 0x80 : 0;
    if (length === 'huge') head.push(m | 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    else if (length === 'short') head.push(m | Math.min(125, n + 7));
    else if (length === 'wide' || n > 0xffff)
      head.push(
        m | 127,
        0,
        0,
        0,
        0,
        (n >>> 24) & 0xff,
        (n >>> 16) & 0xff,
        (n >>> 8) & 0xff,
        n & 0xff,
      );
    else if (n > 125) head.push(m | 126, n >> 8, n & 0xff);
    else head.push(m | n);
    const key = [0x12, 0x34, 0x56, 0x78];
    const body = masked ? payload.map((b, i) => b ^ key[i % 4]!) : payload;
    return concat([Uint8Array.from(head), masked ? Uint8Array.from(key) : new Uint8Array(0), body]);
  });

/** Raw bytes to the HTTP port: one request head, then (maybe) WebSocket frames. */
const httpPiecesArb = fc
  .record({
    method: fc.constantFrom(
      'GET',
      'GET',
      'GET',
      'POST',
      'HEAD',
      'OPTIONS',
      'CONNECT',
      'PRI',
      'G\u0000T',
    ),
    target: targetArb,
    version: fc.constantFrom('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/9.9', ''),
    headers: fc.array(headerArb, { maxLength: 10 }),
    upgrade: fc.boolean(),
    frames: fc.array(wsFrameArb, { maxLength: 5 }),
    join: fc.boolean(),
  })
  .map(({ method, target, version, headers, upgrade, frames, join }) => {
    const standard = upgrade
      ? [
          'Host: 127.0.0.1',
          'Upgrade: websocket',
          'Connection: Upgrade',
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
          'Sec-WebSocket-Version: 13',
        ]
      : [];
    const head = bytes(
      `${method} ${target} ${version}\r\n${[...standard, ...headers].join('\r\n')}\r\n\r\n`,
    );
    const connect = join ? [maskedText('{"cmd":"0","nickname":"rawws"}')] : [];
    return [head, ...connect, ...frames];
  });

function maskedText(text: string): Uint8Array {
  const payload = bytes(text);
  const key = [1, 2, 3, 4];
  const n = payload.length;
  const head = n > 125 ? [0x81, 0x80 | 126, n >> 8, n & 0xff] : [0x81, 0x80 | n];
  return concat([
    Uint8Array.from(head),
    Uint8Array.from(key),
    payload.map((b, i) => b ^ key[i % 4]!),
  ]);
}

/** The TLS port spoken to in plain text, or with a broken handshake. */
const tlsPlainPiecesArb = fc.array(
  fc.oneof(
    pieceArb,
    fc.uint8Array({ maxLength: 2000 }),
    fc.constantFrom(
      // A TLS record header claiming a huge handshake, then nothing.
      Uint8Array.of(0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0xff, 0xff, 0xff),
      // SSLv2-style hello.
      Uint8Array.of(0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10),
      // An alert, then garbage.
      Uint8Array.of(0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28, 0xde, 0xad),
    ),
  ),
  { minLength: 1, maxLength: 4 },
);

const swarmArb = fc.oneof(
  { weight: 5, arbitrary: fc.constant(1) },
  { weight: 1, arbitrary: fc.integer({ min: 2, max: 40 }) },
);

/**
 * Where the well-behaved side (sender, bystanders, probes) connects from: no attack does.
 * Limits per address (connections, CONNECTs, flood allowance) are shared by everyone behind
 * one, so an attacker there may rightly crowd them out; attackers elsewhere may not.
 */
export const HONEST_ADDRESS = '127.0.0.2';

const fromArb = fc.oneof(
  fc.constant('127.0.0.1'),
  fc
    .tuple(fc.nat(255), fc.nat(255), fc.integer({ min: 1, max: 254 }))
    .map(([a, b, c]) => `127.${a}.${b}.${c}`)
    .filter((address) => address !== HONEST_ADDRESS),
);

const protocolAttackArb: fc.Arbitrary<Attack> = fc.record({
  transport: fc.constantFrom('tcp' as const, 'tls' as const, 'ws' as const),
  joined: fc.boolean(),
  caps: fc.boolean(),
  pieces: fc.array(pieceArb, { minLength: 1, maxLength: 6 }),
  chunks: fc.array(fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 70_000 })), {
    minLength: 1,
    maxLength: 6,
  }),
  spread: fc.boolean(),
  wsFraming: fc.constantFrom('text' as const, 'binary' as const, 'fragmented' as const),
  ending: fc.constantFrom('destroy' as const, 'end' as const, 'exit' as const, 'linger' as const),
  swarm: swarmArb,
  from: fromArb,
  resumers: fc.oneof(
    { weight: 3, arbitrary: fc.constant(0) },
    { weight: 2, arbitrary: fc.constant(1) },
    { weight: 1, arbitrary: fc.constant(2) },
  ),
  since: fc.oneof(
    { weight: 4, arbitrary: fc.array(resumePositionArb, { maxLength: 32 }) },
    { weight: 1, arbitrary: fc.array(positionArb, { maxLength: 33 }) },
  ),
});

const rawAttackArb: fc.Arbitrary<Attack> = fc
  .record({
    transport: fc.constantFrom('http' as const, 'tls-plain' as const),
    http: httpPiecesArb,
    plain: tlsPlainPiecesArb,
    chunks: fc.array(
      fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 70_000 })),
      {
        minLength: 1,
        maxLength: 6,
      },
    ),
    spread: fc.boolean(),
    ending: fc.constantFrom('destroy' as const, 'end' as const, 'linger' as const),
    swarm: swarmArb,
    from: fromArb,
  })
  .map(({ transport, http, plain, chunks, spread, ending, swarm, from }) => ({
    transport,
    joined: false,
    caps: false,
    pieces: transport === 'http' ? http : plain,
    chunks,
    spread,
    wsFraming: 'binary' as const,
    ending,
    swarm,
    from,
    resumers: 0,
    since: [],
  }));

/** Pieces are capped so that a batch stays within a few hundred KiB. */
export const attackArb: fc.Arbitrary<Attack> = fc.oneof(
  { weight: 4, arbitrary: protocolAttackArb },
  { weight: 1, arbitrary: rawAttackArb },
);

export const batchArb: fc.Arbitrary<Batch> = fc.record({
  attacks: fc.array(attackArb, { minLength: 1, maxLength: 3 }),
});

/** Batch `index` of the run with `seed`: the same pair always gives the same batch. */
export function batchAt(seed: number, index: number): Batch {
  return fc.sample(batchArb, { seed: (seed + Math.imul(index, 0x9e3779b1)) | 0, numRuns: 1 })[0]!;
}

/**
 * A short, escaped excerpt of some bytes: printable ASCII as is, anything
 * else as \xNN, long repeats of a short pattern folded ("«[ ×20000»",
 * "«{"a": ×9000»"; the guillemets never appear raw, being non-ASCII).
 */
export function excerpt(data: Uint8Array, max = 160): string {
  const show = (b: number) =>
    b >= 0x20 && b < 0x7f && b !== 0x5c
      ? String.fromCharCode(b)
      : `\\x${b.toString(16).padStart(2, '0')}`;
  let out = '';
  let i = 0;
  while (i < data.length && out.length < max) {
    let folded = false;
    for (let period = 1; period <= 8 && !folded; period++) {
      let times = 1;
      while (
        i + (times + 1) * period <= data.length &&
        data
          .subarray(i + times * period, i + (times + 1) * period)
          .every((b, k) => b === data[i + k])
      )
        times++;
      if (times * period >= 24 && times >= 4) {
        const unit = Array.from(data.subarray(i, i + period), show).join('');
        out += `«${unit} ×${times}»`;
        i += times * period;
        folded = true;
      }
    }
    if (!folded) out += show(data[i++]!);
  }
  return i < data.length ? `${out}… (${data.length} bytes)` : out;
}

export function describeAttack(a: Attack): string {
  const chunks = `chunks ${a.chunks.join('/')}${a.spread ? ' spread' : ''}`;
  const raw = a.transport === 'http' || a.transport === 'tls-plain';
  const how = a.transport === 'ws' ? `${a.wsFraming} messages` : chunks;
  const when = raw ? 'raw bytes' : a.joined ? 'after joining' : 'before CONNECT';
  const swarm = `${a.swarm > 1 ? ` ×${a.swarm} at once` : ''}${a.from === '127.0.0.1' ? '' : ` from ${a.from}`}`;
  const resume =
    a.resumers > 0 ? `, then ${a.resumers} resuming with since ${JSON.stringify(a.since)}` : '';
  const head = `${a.transport} ${when}${a.caps ? ' (caps)' : ''}, ${how}, ends ${a.ending}${swarm}${resume}`;
  return [head, ...a.pieces.map((p, i) => `  piece ${i}: ${excerpt(p)}`)].join('\n');
}

/** How deep brackets nest in some bytes, outside strings. */
export function nestingDepth(data: Uint8Array): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    if (inString) {
      if (b === 0x5c) i++;
      else if (b === 0x22) inString = false;
    } else if (b === 0x22) inString = true;
    else if (b === 0x5b || b === 0x7b) max = Math.max(max, ++depth);
    else if (b === 0x5d || b === 0x7d) depth = Math.max(0, depth - 1);
  }
  return max;
}

function fixedAttack(transport: Transport, pieces: (string | Uint8Array)[], joined = true): Attack {
  return {
    transport,
    joined,
    caps: false,
    pieces: pieces.map((p) => (typeof p === 'string' ? bytes(p) : p)),
    chunks: [MAX_FRAME],
    spread: false,
    wsFraming: 'text',
    ending: 'linger',
    swarm: 1,
    from: '127.0.0.1',
    resumers: 0,
    since: [],
  };
}

const upgradeWith = (target: string) =>
  `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';

/**
 * Inputs that once broke the server, each alone on every transport it
 * reaches, run before the generated batches: the RTT echo of a deep value
 * (JSON.stringify overflowed the stack from about 4,100 levels), and a
 * WebSocket upgrade whose request target is not a URL.
 */
export const FIXED_CASES: Batch[] = [
  ...(['tcp', 'tls', 'ws'] as const).map((t) => ({
    attacks: [fixedAttack(t, [`{"cmd":"6","beginTime":${nested(20_000, 'array', true)}}`])],
  })),
  { attacks: [fixedAttack('ws', [`{"cmd":"6","beginTime":${nested(10_000, 'object', true)}}`])] },
  { attacks: [fixedAttack('http', [upgradeWith('//')], false)] },
  { attacks: [fixedAttack('http', [upgradeWith('http://[')], false)] },
];
