import { beforeEach, describe, expect, it } from 'vitest';
import { BannedWords } from '../../../src/core/banned-words.js';
import { Chat } from '../../../src/core/chat.js';
import { checkNickname } from '../../../src/core/nickname.js';
import { ErrorCode } from '../../../src/protocol/codes.js';
import { parseRequestText } from '../../../src/protocol/request-codec.js';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';
import { connectWith, FakePeer, joinChat, sendRequest as send } from '../../helpers/fake-peer.js';

let chat: Chat;
const connect = (nickname: string, caps?: string[]) => joinChat(chat, nickname, caps);

function sendText(peer: FakePeer, text: string): void {
  peer.session.receive(parseRequestText(text));
}

/** A logger that keeps the fields of every line, at any level, whose message starts with `says`. */
function recording(says: string) {
  const lines: object[] = [];
  const record = (fields: object, message: string) => {
    if (message.startsWith(says)) lines.push(fields);
  };
  return { lines, logger: { debug() {}, info: record, warn: record, error: record } };
}

beforeEach(() => {
  chat = new Chat({ maxUsers: 3 });
});

describe('joining', () => {
  it('greets the joiner with the address and count, and tells the others', () => {
    const ann = connect('ann');
    expect(ann.take()).toEqual([{ cmd: '03', serverAddress: ['127.0.0.1', 20825], userCount: 1 }]);
    const bob = connect('bob');
    expect(ann.take()).toEqual([{ cmd: '8', nickname: 'bob', userCount: 2 }]);
    expect(bob.take()).toEqual([{ cmd: '03', serverAddress: ['127.0.0.1', 20825], userCount: 2 }]);
  });

  it('refuses a taken nickname before checking capacity, case-insensitively', () => {
    connect('ann');
    connect('bob');
    connect('cat');
    const dup = connect('ANN');
    expect(dup.take()).toEqual([{ cmd: '01' }]);
    expect(dup.closedWith).toBe('nickname-taken');
    const late = connect('dan');
    expect(late.take()).toEqual([{ cmd: '02' }]);
    expect(late.closedWith).toBe('room-full');
  });

  it('logs a CONNECT refused for a full lobby, once per ten seconds with how many were held back', () => {
    let now = 0;
    const lines: { message: string; fields: object }[] = [];
    const record = (fields: object, message: string) => lines.push({ message, fields });
    chat = new Chat({
      maxUsers: 1,
      clock: () => now,
      logger: { debug() {}, info: record, warn: record, error: record },
    });
    connect('ann');
    for (const n of ['bob', 'cat', 'dan']) expect(connect(n).take()).toEqual([{ cmd: '02' }]);
    now += 10_000;
    connect('eve');
    const full = lines.filter((l) => l.message === 'room full, CONNECT refused');
    expect(full.map((l) => l.fields)).toEqual([
      expect.objectContaining({ nickname: 'bob', room: 'lobby', capacity: 1 }),
      // The next, ten seconds on, says how many were held back meanwhile.
      expect.objectContaining({ nickname: 'eve', held: 2 }),
    ]);
  });

  it('refuses unusable nicknames with "01", or an error for opted-in clients', () => {
    for (const bad of ['', 'a b', 'tab\there', 'x'.repeat(33), 'zero\u200bwidth']) {
      const legacy = connect(bad);
      expect(legacy.take()).toEqual([{ cmd: '01' }]);
      const modern = connect(bad, ['errors']);
      expect(modern.take()).toMatchObject([
        { cmd: '90', code: ErrorCode.INVALID_NICKNAME, ref: '0' },
      ]);
      expect(modern.closedWith).toBe('invalid-nickname');
    }
    expect(chat.lobby.size).toBe(0);
  });

  it('stores nicknames in NFC, so composed and decomposed forms collide', () => {
    connect('caf\u00e9');
    expect(connect('cafe\u0301').take()).toEqual([{ cmd: '01' }]);
    expect(checkNickname('cafe\u0301')).toEqual({ ok: true, nickname: 'caf\u00e9' });
  });

  it('grants only known capabilities and confirms them in "03"', () => {
    const ann = connect('ann', ['renames', 'teleport', 'errors']);
    expect(ann.take()).toEqual([
      {
        cmd: '03',
        serverAddress: ['127.0.0.1', 20825],
        userCount: 1,
        caps: ['errors', 'renames'],
        limits: { rate: 0, burst: 40, maxMessage: 4096 },
      },
    ]);
  });

  it('tells opted-in clients the flood limits in "03", and course clients nothing new', () => {
    chat = new Chat({ rateLimit: 5, rateBurst: 7, maxMessage: 100 });
    expect(connect('ann', []).take()).toEqual([
      {
        cmd: '03',
        serverAddress: ['127.0.0.1', 20825],
        userCount: 1,
        caps: [],
        limits: { rate: 5, burst: 7, maxMessage: 100 },
      },
    ]);
    expect(connect('bob').take()).toEqual([
      { cmd: '03', serverAddress: ['127.0.0.1', 20825], userCount: 2 },
    ]);
  });

  it('closes a connection whose first request is not CONNECT', () => {
    const peer = new FakePeer();
    peer.session = chat.open(peer);
    send(peer, { cmd: '7', msg: 'hi' });
    expect(peer.closedWith).toBe('protocol');
    expect(peer.take()).toEqual([]);
  });
});

describe('in the room', () => {
  let ann: FakePeer;
  let bob: FakePeer;
  beforeEach(() => {
    ann = connect('ann');
    bob = connect('bob', ['errors', 'renames', 'whispers']);
    ann.take();
    bob.take();
  });

  it('sends chat to everyone but the sender, encoding the broadcast once', () => {
    const cat = connect('cat');
    ann.take();
    bob.take();
    cat.take();
    send(cat, { cmd: '7', msg: 'hello' });
    expect(cat.take()).toEqual([]);
    expect(ann.outbox).toEqual([{ cmd: '70', from: 'cat', msg: 'hello' }]);
    expect(bob.deliveries.at(-1)).toBe(ann.deliveries.at(-1));
  });

  it('lists users with their addresses in join order', () => {
    send(ann, { cmd: '1' });
    const [reply] = ann.take();
    expect(reply).toEqual({
      cmd: '10',
      users: [
        ['ann', '127.0.0.1', ann.remote.port],
        ['bob', '127.0.0.1', bob.remote.port],
      ],
    });
  });

  it('handles whispers: unknown user, yourself, success', () => {
    send(ann, { cmd: '2', to: 'nobody', msg: 'x' });
    expect(ann.take()).toEqual([{ cmd: '20' }]);
    send(ann, { cmd: '2', to: 'ANN', msg: 'x' });
    expect(ann.take()).toEqual([{ cmd: '21' }]);
    send(ann, { cmd: '2', to: 'bob', msg: 'psst' });
    expect(ann.take()).toEqual([{ cmd: '22' }]);
    expect(bob.take()).toEqual([{ cmd: '70', from: 'ann', msg: 'psst', whisper: true }]);
    send(bob, { cmd: '2', to: 'ann', msg: 'back' });
    expect(ann.take()).toEqual([{ cmd: '70', from: 'bob', msg: 'back' }]);
  });

  it('renames, refusing taken names including your own, and tells opted-in members', () => {
    send(ann, { cmd: '5', newNickname: 'ann' });
    expect(ann.take()).toEqual([{ cmd: '50' }]);
    send(ann, { cmd: '5', newNickname: 'Bob' });
    expect(ann.take()).toEqual([{ cmd: '50' }]);
    send(ann, { cmd: '5', newNickname: 'anna' });
    expect(ann.take()).toEqual([{ cmd: '51', newNickname: 'anna' }]);
    expect(bob.take()).toEqual([{ cmd: '91', oldNickname: 'ann', newNickname: 'anna' }]);
    send(bob, { cmd: '5', newNickname: 'ann' });
    expect(bob.take()).toEqual([{ cmd: '51', newNickname: 'ann' }]);
    expect(ann.take()).toEqual([]);
    send(ann, { cmd: '1' });
    const [list] = ann.take();
    expect(list).toMatchObject({
      users: [['anna'], ['ann']].map(([n]) => [n, '127.0.0.1', expect.any(Number)]),
    });
  });

  it('echoes RTT beginTime and answers VERSION', () => {
    send(ann, { cmd: '6', beginTime: 1590000000123.4568 });
    send(ann, { cmd: '4' });
    expect(ann.take()).toEqual([
      { cmd: '60', beginTime: 1590000000123.4568 },
      { cmd: '40', serverVersion: '1' },
    ]);
  });

  it('disconnects a sender of banned words; nobody receives the message', () => {
    send(ann, { cmd: '7', msg: 'Well, I HATE Professor X' });
    expect(ann.closedWith).toBe('banned-words');
    expect(bob.take()).toEqual([{ cmd: '30', nickname: 'ann', userCount: 1 }]);
    send(bob, { cmd: '2', to: 'nobody', msg: 'i hate professor' });
    expect(bob.take()).toEqual([{ cmd: '20' }]);
    connect('cat');
    bob.take();
    send(bob, { cmd: '2', to: 'cat', msg: 'i hate professor' });
    expect(bob.take()).toMatchObject([{ cmd: '90', code: ErrorCode.BANNED_WORDS }]);
    expect(bob.closedWith).toBe('banned-words');
  });

  it('uses a replaced banned-word list', () => {
    chat = new Chat({ bannedWords: BannedWords.fromText('spoiler\n\nRosebud\n') });
    const a = connect('a');
    const b = connect('b');
    send(a, { cmd: '7', msg: 'i hate professor' });
    expect(a.closedWith).toBeUndefined();
    send(a, { cmd: '7', msg: 'it was ROSEBUD' });
    expect(a.closedWith).toBe('banned-words');
    expect(b.take().at(-1)).toEqual({ cmd: '30', nickname: 'a', userCount: 1 });
  });

  it('holds nicknames and new room names to the banned words, as chats are', () => {
    // Shown to everyone: in member lists, before each chat, in ROOMS.
    chat = new Chat({ bannedWords: BannedWords.fromText('spoiler\n') });
    const course = connect('SpoilerKing');
    expect(course.take()).toEqual([{ cmd: '01' }]);
    expect(course.closedWith).toBe('invalid-nickname');
    const a = connect('a', ['errors', 'rooms']);
    a.take();
    send(a, { cmd: '5', newNickname: 'no_spoilers' });
    expect(a.take()).toMatchObject([{ cmd: '90', code: ErrorCode.INVALID_NICKNAME }]);
    send(a, { cmd: '100', room: 'spoiler-room' });
    expect(a.take()).toMatchObject([
      { cmd: '90', code: ErrorCode.INVALID_ROOM_NAME, message: 'room name contains a banned word' },
    ]);
    expect(a.closedWith).toBeUndefined();
    send(a, { cmd: '100', room: 'films' });
    expect(a.take()).toMatchObject([{ cmd: '101', room: 'films' }]);
  });

  it('holds names to the banned words in every look-alike spelling of them', () => {
    chat = new Chat({ bannedWords: BannedWords.fromText('badword\n') });
    const a = connect('a', ['errors', 'rooms']);
    a.take();
    // Fullwidth, Cyrillic а, mathematical bold, a mark below: each the same name as badword.
    for (const name of ['ｂａｄｗｏｒｄ', 'b\u0430dword', '𝐛𝐚𝐝𝐰𝐨𝐫𝐝', 'xbadwo\u0323rdx']) {
      send(a, { cmd: '5', newNickname: name });
      expect(a.take(), name).toMatchObject([{ cmd: '90', code: ErrorCode.INVALID_NICKNAME }]);
      send(a, { cmd: '100', room: name });
      expect(a.take(), name).toMatchObject([
        { cmd: '90', message: 'room name contains a banned word' },
      ]);
    }
    // A chat is held to the course's rule only: the text as typed.
    send(a, { cmd: '7', msg: 'ｂａｄｗｏｒｄ' });
    expect(a.closedWith).toBeUndefined();
    send(a, { cmd: '5', newNickname: 'goodword' });
    expect(a.take()).toMatchObject([{ cmd: '51' }]);
  });

  it('checks an action for banned words in the asterisks others get it in', () => {
    chat = new Chat({ bannedWords: BannedWords.fromText('*spoiler\n') });
    const a = connect('a', ['actions']);
    const course = connect('course');
    a.take();
    course.take();
    send(a, { cmd: '7', msg: 'spoiler: snape', action: true });
    expect(a.closedWith).toBe('banned-words');
    expect(course.take()).toEqual([{ cmd: '30', nickname: 'a', userCount: 1 }]);
    // The same text as chat is no banned phrase.
    const b = connect('b', ['actions']);
    send(b, { cmd: '7', msg: 'spoiler: snape' });
    expect(b.closedWith).toBeUndefined();
  });

  it('tells everyone else when a member exits or is lost', () => {
    send(ann, { cmd: '3' });
    expect(ann.closedWith).toBe('exit');
    expect(ann.take()).toEqual([]);
    expect(bob.take()).toEqual([{ cmd: '30', nickname: 'ann', userCount: 1 }]);
    const cat = connect('cat');
    bob.take();
    cat.session.ended('lost');
    expect(bob.take()).toEqual([{ cmd: '30', nickname: 'cat', userCount: 1 }]);
    expect(chat.find('cat')).toBeUndefined();
  });

  it('keeps the connection open after bad or unknown requests; errors only for opted-in clients', () => {
    for (const text of [
      'nope',
      '[]',
      '{"cmd":"99"}',
      '{"cmd":"7","msg":1}',
      '{"cmd":"0","nickname":"x"}',
    ]) {
      sendText(ann, text);
      sendText(bob, text);
    }
    expect(ann.take()).toEqual([]);
    expect(ann.closedWith).toBeUndefined();
    expect(bob.take().map((m) => (m.cmd === '90' ? m.code : m.cmd))).toEqual([
      ErrorCode.MALFORMED_JSON,
      ErrorCode.NOT_AN_OBJECT,
      ErrorCode.UNKNOWN_COMMAND,
      ErrorCode.INVALID_FIELD,
      ErrorCode.ALREADY_CONNECTED,
    ]);
    send(ann, { cmd: '7', msg: 'still here' });
    expect(bob.take()).toEqual([{ cmd: '70', from: 'ann', msg: 'still here' }]);
  });

  it('on shutdown closes everyone without leave notices', () => {
    chat.shutdown();
    expect(ann.closedWith).toBe('shutdown');
    expect(ann.take()).toEqual([]);
    expect(bob.take()).toEqual([
      { cmd: '90', code: ErrorCode.SERVER_SHUTDOWN, message: expect.any(String) },
    ]);
  });
});

describe('flood control', () => {
  it('refuses requests over the rate, counts garbage too, and cuts off a sustained flood', () => {
    let now = 0;
    chat = new Chat({ rateLimit: 2, rateBurst: 3, clock: () => now });
    const ann = connect('ann', ['errors']);
    const bob = connect('bob');
    ann.take();
    bob.take();
    // CONNECT happened before joining and was not counted: three in the bucket.
    for (let i = 0; i < 3; i++) send(ann, { cmd: '7', msg: `m${i}` });
    sendText(ann, 'garbage');
    expect(bob.take()).toEqual(['m0', 'm1', 'm2'].map((msg) => ({ cmd: '70', from: 'ann', msg })));
    expect(ann.take()).toMatchObject([{ cmd: '90', code: ErrorCode.RATE_LIMITED }]);
    now += 500; // one token back
    send(ann, { cmd: '7', msg: 'later' });
    expect(bob.take()).toEqual([{ cmd: '70', from: 'ann', msg: 'later' }]);
    for (let i = 0; i < 4; i++) sendText(ann, '{"cmd":"7","msg":"spam"}');
    expect(ann.closedWith).toBe('flooding');
    expect(ann.take().at(-1)).toMatchObject({ cmd: '90', code: ErrorCode.FLOODING });
    expect(bob.take()).toEqual([{ cmd: '30', nickname: 'ann', userCount: 1 }]);
  });

  it('counts a RENAME as a request in each room it is announced in, at most half a burst', () => {
    let now = 0;
    chat = new Chat({ rateLimit: 1, rateBurst: 20, clock: () => now });
    const ann = connect('ann', ['errors', 'rooms', 'renames']);
    const bob = connect('bob', ['errors', 'rooms', 'renames']);
    for (const room of ['r1', 'r2', 'r3', 'r4']) {
      send(ann, { cmd: '100', room });
      send(bob, { cmd: '100', room });
    }
    ann.take();
    bob.take();
    // 16 left of 20: a RENAME in 5 rooms takes 5, and bob hears it in each.
    send(ann, { cmd: '5', newNickname: 'anna' });
    expect(ann.take()).toEqual([{ cmd: '51', newNickname: 'anna' }]);
    expect(bob.take().filter((m) => m.cmd === '91')).toHaveLength(5);
    send(ann, { cmd: '5', newNickname: 'ann2' });
    send(ann, { cmd: '5', newNickname: 'ann3' });
    expect(ann.take().map((m) => m.cmd)).toEqual(['51', '51']);
    // 1 left: the RENAME is read (0 left) but cannot pay for its other 4 rooms.
    send(ann, { cmd: '5', newNickname: 'ann4' });
    expect(ann.take()).toEqual([
      {
        cmd: '90',
        code: ErrorCode.RATE_LIMITED,
        message:
          'a rename is announced in each of your 5 rooms, and counts as a request in each; slow down',
        ref: '5',
      },
    ]);
    expect(bob.take().filter((m) => m.cmd === '91')).toHaveLength(10);
    expect(chat.find('ann3')).toBeDefined();
    now += 5_000;
    send(ann, { cmd: '5', newNickname: 'ann4' });
    expect(ann.take()).toEqual([{ cmd: '51', newNickname: 'ann4' }]);
    // Half a burst of 8 at most: 4 of the 4 left after 4 joins, not 5.
    chat = new Chat({ rateLimit: 1, rateBurst: 8, clock: () => now });
    const dan = connect('dan', ['errors', 'rooms']);
    for (const room of ['r1', 'r2', 'r3', 'r4']) send(dan, { cmd: '100', room });
    dan.take();
    send(dan, { cmd: '5', newNickname: 'dan2' });
    expect(dan.take()).toEqual([{ cmd: '51', newNickname: 'dan2' }]);
    // A member of the lobby alone (a course client) pays one, as before.
    chat = new Chat({ rateLimit: 1, rateBurst: 2, clock: () => now });
    const cat = connect('cat');
    send(cat, { cmd: '5', newNickname: 'cat2' });
    send(cat, { cmd: '5', newNickname: 'cat3' });
    expect(cat.take()).toEqual([
      { cmd: '03', serverAddress: ['127.0.0.1', 20825], userCount: 1 },
      { cmd: '51', newNickname: 'cat2' },
      { cmd: '51', newNickname: 'cat3' },
    ]);
  });

  it("caps a RENAME's cost by the burst its client was told, which it paces by, when a reload raised it", () => {
    const now = 0;
    chat = new Chat({ rateLimit: 1, rateBurst: 8, clock: () => now });
    const dan = connect('dan', ['errors', 'rooms']);
    chat.reconfigure({ rateLimit: 1, rateBurst: 40 });
    for (let i = 0; i < 9; i++) send(dan, { cmd: '100', room: `r${i}` });
    expect(dan.session.bucket!.level(now)).toBe(31);
    // In 10 rooms; told a burst of 8, so it pays 4 (half of 8), not 10.
    send(dan, { cmd: '5', newNickname: 'dan2' });
    expect(dan.take().at(-1)).toEqual({ cmd: '51', newNickname: 'dan2' });
    expect(dan.session.bucket!.level(now)).toBe(27);
  });

  it('lets an address CONNECT a burst of --rate-burst times (10, or --max-conns-per-ip, at least), then once every ten requests’ worth: "02" past it', () => {
    let now = 0;
    chat = new Chat({ rateLimit: 20, rateBurst: 12, maxConnectionsPerIp: 8, clock: () => now });
    const watcher = joinChat(chat, 'watcher', ['errors'], '192.0.2.7');
    // Joins, failed CONNECTs and resumes alike: each is a CONNECT.
    expect(connect('watcher').take()).toEqual([{ cmd: '01' }]);
    for (let i = 0; i < 11; i++) {
      const peer = connect(`p${i}`);
      expect(peer.take()[0], `p${i}`).toMatchObject({ cmd: '03' });
      send(peer, { cmd: '3' });
    }
    watcher.take();
    const refused = connect('cat');
    expect(refused.take()).toEqual([{ cmd: '02' }]);
    expect(refused.closedWith).toBe('too-many-connections');
    // Nobody heard of it.
    expect(watcher.take()).toEqual([]);
    now += 500; // one CONNECT's worth at 20 / 10 a second
    expect(connect('cat').take()[0]).toMatchObject({ cmd: '03' });
    expect(connect('dan').take()).toEqual([{ cmd: '02' }]);
    // Another address has a budget of its own.
    expect(joinChat(chat, 'eve', undefined, '192.0.2.8').take()[0]).toMatchObject({ cmd: '03' });
    // A smaller --rate-burst still leaves ten.
    chat = new Chat({ rateLimit: 20, rateBurst: 2, maxConnectionsPerIp: 8, clock: () => now });
    for (let i = 0; i < 10; i++) expect(connect(`q${i}`).take()[0]).toMatchObject({ cmd: '03' });
    expect(connect('q10').take()).toEqual([{ cmd: '02' }]);
    // A class behind one NAT arriving together: as many as the address may hold get in.
    chat = new Chat({
      rateLimit: 20,
      rateBurst: 12,
      maxConnectionsPerIp: 30,
      maxUsers: 40,
      clock: () => now,
    });
    for (let i = 0; i < 30; i++) expect(connect(`c${i}`).take()[0]).toMatchObject({ cmd: '03' });
    expect(connect('c30').take()).toEqual([{ cmd: '02' }]);
  });

  it('refuses the first frame of a connection whose address has no CONNECT left before it is read', () => {
    let now = 0;
    chat = new Chat({
      rateLimit: 20,
      rateBurst: 1,
      maxConnectionsPerIp: 10,
      maxUsers: 20,
      clock: () => now,
    });
    const joined = Array.from({ length: 10 }, (_, i) => connect(`p${i}`));
    // Joined sessions are read whatever their address's budget.
    for (const peer of joined) expect(peer.session.admitsFrame()).toBe(true);
    const spent = new FakePeer();
    spent.session = chat.open(spent);
    expect(spent.session.admitsFrame()).toBe(false);
    expect(spent.take()).toEqual([{ cmd: '02' }]);
    expect(spent.closedWith).toBe('too-many-connections');
    now += 500;
    const next = new FakePeer();
    next.session = chat.open(next);
    // Asking spends nothing: the CONNECT read then takes the one CONNECT there is.
    expect(next.session.admitsFrame()).toBe(true);
    expect(next.session.admitsFrame()).toBe(true);
    send(next, { cmd: '0', nickname: 'late' });
    expect(next.take()[0]).toMatchObject({ cmd: '03' });
    // Flood control off: every frame is read.
    chat = new Chat({ rateLimit: 0, maxConnectionsPerIp: 128, clock: () => now });
    for (let i = 0; i < 20; i++) connect(`q${i}`);
    const free = new FakePeer();
    free.session = chat.open(free);
    expect(free.session.admitsFrame()).toBe(true);
  });

  it('logs refused CONNECTs and connections over the caps once per ten seconds, with how many it held back', () => {
    let now = 0;
    const lines: { message: string; fields: object }[] = [];
    const record = (fields: object, message: string) => lines.push({ message, fields });
    const logger = { debug() {}, info: record, warn: record, error: record };
    chat = new Chat({
      rateLimit: 20,
      rateBurst: 1,
      maxConnectionsPerIp: 1,
      clock: () => now,
      logger,
    });
    connect('ann');
    for (let i = 0; i < 50; i++) connect(`p${i}`);
    for (let i = 0; i < 50; i++) chat.admission.tryOpen('192.0.2.1');
    const counted = () => {
      const by = new Map<string, object[]>();
      for (const { message, fields } of lines)
        by.set(message, [...(by.get(message) ?? []), fields]);
      return by;
    };
    expect(counted().get('CONNECT over its address budget refused')).toHaveLength(1);
    expect(counted().get('connection limit reached')).toHaveLength(1);
    now += 10_000;
    for (let i = 0; i < 10; i++) connect(`late${i}`);
    connect('later');
    expect(counted().get('CONNECT over its address budget refused')).toHaveLength(2);
    expect(counted().get('CONNECT over its address budget refused')?.at(-1)).toMatchObject({
      held: 40,
    });
  });

  it('logs the address of each member who joins, also with addresses hidden from members', async () => {
    const joins: object[] = [];
    const logger = {
      debug() {},
      info: (fields: object, message: string) => {
        if (message.includes('joined') || message.includes('session back')) joins.push(fields);
      },
      warn() {},
      error() {},
    };
    chat = new Chat({
      hideAddresses: true,
      logger,
      history: new MemoryHistoryStore({ retention: { maxMessages: 100, maxAgeMs: 0 } }),
    });
    const ann = joinChat(chat, 'ann', undefined, '192.0.2.7');
    const bob = joinChat(chat, 'bob', ['rooms', 'history'], '2001:db8::8');
    send(ann, { cmd: '1' });
    expect(ann.take().at(-1)).toMatchObject({
      cmd: '10',
      users: [
        ['ann', 'hidden', 0],
        ['bob', 'hidden', 0],
      ],
    });
    // A resume, from another address: the address it comes from now.
    const token = (bob.take().find((m) => m.cmd === '03') as { resume: string }).resume;
    const caps = ['rooms', 'history'];
    connectWith(chat, { cmd: '0', nickname: 'bob', caps, resume: token }, '192.0.2.9');
    await new Promise((resolve) => setImmediate(resolve));
    expect(joins).toMatchObject([
      { nickname: 'ann', ip: '192.0.2.7', room: 'lobby' },
      { nickname: 'bob', ip: '2001:db8::8', room: 'lobby' },
      { nickname: 'bob', ip: '192.0.2.9' },
    ]);
  });

  it.each([
    ['an invalid CONNECT', '{"cmd":"0","nickname":["x"]}', 'Invalid first request'],
    ['a request other than CONNECT', '{"cmd":"7","msg":"hi"}', 'Invalid request command'],
  ])(
    'logs %s as a first request once per ten seconds, however many connections send one',
    (_, text, says) => {
      let now = 0;
      const { lines, logger } = recording(says);
      chat = new Chat({ rateLimit: 0, clock: () => now, logger });
      const first = () => {
        const peer = new FakePeer();
        peer.session = chat.open(peer);
        sendText(peer, text);
        expect(peer.closedWith).toBe('protocol');
      };
      for (let i = 0; i < 50; i++) first();
      expect(lines).toHaveLength(1);
      now += 10_000;
      first();
      expect(lines).toHaveLength(2);
      expect(lines[1]).toMatchObject({ held: 49 });
    },
  );

  it.each([
    ['an unknown command', '{"cmd":"42"}', 'Invalid request command'],
    ['an invalid request', '{"cmd":"7","msg":5}', 'Invalid request:'],
    ['a message over --max-message', `{"cmd":"7","msg":"${'x'.repeat(101)}"}`, 'message too long'],
    ['a moderation request from a non-operator', '{"cmd":"97"}', 'moderation request'],
    ['a RENAME to a banned nickname', '{"cmd":"5","newNickname":"evil"}', 'banned nickname'],
  ])(
    'logs %s from joined members once per ten seconds, with how many it held back',
    (_, text, says) => {
      let now = 0;
      const { lines, logger } = recording(says);
      chat = new Chat({ rateLimit: 0, maxMessage: 100, clock: () => now, logger });
      chat.bans.add({ mask: 'evil', by: 'op', reason: 'no', expires: null }, now);
      const members = [connect('ann', ['errors', 'moderation']), connect('bob', ['errors'])];
      for (let i = 0; i < 30; i++) sendText(members[i % 2]!, text);
      expect(lines).toHaveLength(1);
      now += 10_000;
      sendText(members[0]!, text);
      expect(lines).toHaveLength(2);
      expect(lines[1]).toMatchObject({ held: 29 });
      expect(members[1]!.take().at(-1)).toMatchObject({ cmd: '90' });
    },
  );

  it('logs reaching the rate limit once per ten seconds, also for a client that alternates one request in and one refused', () => {
    let now = 0;
    const { lines, logger } = recording('rate limit reached');
    chat = new Chat({ rateLimit: 1, rateBurst: 1, clock: () => now, logger });
    const ann = connect('ann', ['errors']);
    for (let i = 0; i < 9; i++) {
      now += 1_000;
      send(ann, { cmd: '7', msg: 'in' });
      send(ann, { cmd: '7', msg: 'refused' });
    }
    expect(ann.closedWith).toBeUndefined();
    expect(ann.take().filter((m) => m.cmd === '90')).toHaveLength(9);
    expect(lines).toHaveLength(1);
  });

  it('logs OPERs refused unchecked (over the budget of checks) once per ten seconds', () => {
    const { lines, logger } = recording('OPER refused unchecked');
    chat = new Chat({ rateLimit: 0, logger });
    const ann = connect('ann', ['errors', 'moderation']);
    for (let i = 0; i < 30; i++) sendText(ann, '{"cmd":"92","name":"x","password":"y"}');
    expect(ann.take().filter((m) => m.cmd === '90')).toHaveLength(30);
    expect(lines).toHaveLength(1);
  });

  it('does not count CONNECTs with flood control off, nor with no cap per address (all clients behind one proxy)', () => {
    for (const options of [
      { rateLimit: 0, rateBurst: 3, maxConnectionsPerIp: 128 },
      { rateLimit: 20, rateBurst: 3, maxConnectionsPerIp: 0 },
    ]) {
      chat = new Chat(options);
      for (let i = 0; i < 50; i++) {
        const peer = connect(`p${i}`);
        expect(peer.take()[0], `p${i}`).toMatchObject({ cmd: '03' });
        send(peer, { cmd: '3' });
      }
    }
  });

  it('gives a reconnection what its address left, not a fresh burst, and tells it in "03"', () => {
    let now = 0;
    chat = new Chat({ rateLimit: 2, rateBurst: 4, clock: () => now });
    const bob = connect('bob');
    const ann = connect('ann', ['errors']);
    for (let i = 0; i < 4; i++) send(ann, { cmd: '7', msg: `m${i}` });
    send(ann, { cmd: '3' });
    bob.take();
    // Again at once, from the same address: joined, but with nothing left to send.
    const again = connect('ann2', ['errors']);
    expect(again.take()[0]).toMatchObject({ cmd: '03', limits: { tokens: 0 } });
    send(again, { cmd: '7', msg: 'at once' });
    expect(again.take()).toMatchObject([{ cmd: '90', code: ErrorCode.RATE_LIMITED }]);
    send(again, { cmd: '3' });
    now += 500; // one token back
    const later = connect('ann3', ['errors']);
    expect(later.take()[0]).toMatchObject({ cmd: '03', limits: { rate: 2, burst: 4, tokens: 1 } });
    send(later, { cmd: '7', msg: 'one' });
    send(later, { cmd: '7', msg: 'two' });
    expect(bob.take().filter((m) => m.cmd === '70')).toEqual([
      { cmd: '70', from: 'ann3', msg: 'one' },
    ]);
    expect(later.take()).toMatchObject([{ cmd: '90', code: ErrorCode.RATE_LIMITED }]);
    // Another address is not held to it.
    const other = joinChat(chat, 'cat', ['errors'], '192.0.2.9');
    expect(other.take()[0]).toMatchObject({ cmd: '03', limits: { rate: 2, burst: 4 } });
    expect(other.take()).toEqual([]);
  });

  it('starts a connection opened while another of its address has spent its allowance with what is left', () => {
    const now = 0;
    chat = new Chat({ rateLimit: 2, rateBurst: 4, clock: () => now });
    const ann = connect('ann', ['errors']);
    for (let i = 0; i < 4; i++) send(ann, { cmd: '7', msg: `m${i}` });
    // Still open: its close may be read only after the next connection is accepted.
    const next = connect('next', ['errors']);
    expect(next.take()[0]).toMatchObject({ cmd: '03', limits: { tokens: 0 } });
    expect(ann.closedWith).toBeUndefined();
  });

  it('forgets what an address left once it has refilled, and keeps nothing for a full allowance', () => {
    let now = 0;
    chat = new Chat({ rateLimit: 2, rateBurst: 4, clock: () => now });
    for (let i = 0; i < 10; i++) {
      const peer = connect(`quiet${i}`, ['errors']);
      const welcome = peer.take()[0] as { cmd: string; limits: object };
      expect(welcome.cmd).toBe('03');
      expect(welcome.limits, `quiet${i}`).not.toHaveProperty('tokens');
      send(peer, { cmd: '3' });
      now += 5000; // within the address's CONNECTs (one every 5 s at 2 / 10 a second)
    }
    const loud = connect('loud', ['errors']);
    for (let i = 0; i < 3; i++) send(loud, { cmd: '7', msg: `m${i}` });
    send(loud, { cmd: '3' });
    expect(connect('next', ['errors']).take()[0]).toMatchObject({ limits: { tokens: 1 } });
    now += 2000;
    const rested = connect('rested', ['errors']).take()[0] as { limits: object };
    expect(rested.limits).not.toHaveProperty('tokens');
  });

  it('hands a resumed session the allowance its old connection had left', async () => {
    const now = 0;
    chat = new Chat({
      rateLimit: 2,
      rateBurst: 4,
      clock: () => now,
      history: new MemoryHistoryStore({ retention: { maxMessages: 100, maxAgeMs: 0 } }),
    });
    const caps = ['errors', 'rooms', 'history'];
    const bob = connect('bob');
    const ann = joinChat(chat, 'ann', caps, '192.0.2.1');
    const token = (ann.take().find((m) => m.cmd === '03') as { resume: string }).resume;
    for (let i = 0; i < 4; i++) send(ann, { cmd: '7', msg: `m${i}` });
    await new Promise((resolve) => setImmediate(resolve));
    // From another address, and so with a full allowance of its own until it takes ann back.
    const back = new FakePeer('192.0.2.2');
    back.session = chat.open(back);
    send(back, { cmd: '0', nickname: 'ann', caps, resume: token });
    expect(back.take().find((m) => m.cmd === '03')).toMatchObject({
      resumed: true,
      limits: { tokens: 0 },
    });
    bob.take();
    send(back, { cmd: '7', msg: 'flood' });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(bob.take()).toEqual([]);
    expect(back.take().filter((m) => m.cmd === '90')).toMatchObject([
      { cmd: '90', code: ErrorCode.RATE_LIMITED },
    ]);
  });

  it('always lets EXIT through', () => {
    chat = new Chat({ rateLimit: 1, rateBurst: 1, clock: () => 0 });
    const ann = connect('ann');
    send(ann, { cmd: '4' });
    send(ann, { cmd: '3' });
    expect(ann.closedWith).toBe('exit');
  });
});

describe('the per-recipient fault boundary', () => {
  it('delivers a broadcast to every other member when one recipient throws, and closes only that one', () => {
    const ann = connect('ann');
    const broken = connect('broken');
    const cat = connect('cat');
    for (const p of [ann, broken, cat]) p.take();
    broken.send = () => {
      throw new TypeError('encoder failed');
    };
    send(ann, { cmd: '7', msg: 'hello' });
    expect(cat.take()).toEqual([{ cmd: '70', from: 'ann', msg: 'hello' }]);
    expect(broken.closedWith).toBe('internal-error');
    expect(chat.stats.faults).toBe(1);
    // The transport reports the close; only then does the member leave.
    broken.session.ended('internal-error');
    expect(cat.take()).toEqual([{ cmd: '30', nickname: 'broken', userCount: 2 }]);
    send(cat, { cmd: '7', msg: 'still works' });
    expect(ann.take()).toEqual([
      { cmd: '30', nickname: 'broken', userCount: 2 },
      { cmd: '70', from: 'cat', msg: 'still works' },
    ]);
  });
});
