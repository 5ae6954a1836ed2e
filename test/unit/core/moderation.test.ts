import fc from 'fast-check';
import { beforeEach, describe, expect, it } from 'vitest';
import { BanList, MemoryBanStore, parseIp } from '../../../src/core/bans.js';
import { Chat } from '../../../src/core/chat.js';
import type { Operator } from '../../../src/core/moderation.js';
import { MAX_BAN_REASON, MAX_BANS } from '../../../src/core/moderation-commands.js';
import { ErrorCode } from '../../../src/protocol/codes.js';
import type { Request } from '../../../src/protocol/messages.js';
import { MemoryHistoryStore } from '../../../src/store/memory-history.js';
import { FakePeer } from '../../helpers/fake-peer.js';

const MOD = ['errors', 'moderation'];
const teacher: Operator = { name: 'teacher', verify: (p) => p === 'sesame' };

let chat: Chat;
let store: MemoryBanStore;
let now: number;

function connect(nickname: string, caps?: string[], ip = '127.0.0.1'): FakePeer {
  const peer = new FakePeer(ip);
  peer.session = chat.open(peer);
  send(peer, caps === undefined ? { cmd: '0', nickname } : { cmd: '0', nickname, caps });
  peer.take();
  return peer;
}

function send(peer: FakePeer, request: Request): void {
  peer.session.receive({ ok: true, request });
}

function oper(nickname = 'op', ip = '127.0.0.1'): FakePeer {
  const op = connect(nickname, MOD, ip);
  send(op, { cmd: '92', name: 'teacher', password: 'sesame' });
  expect(op.take()).toEqual([{ cmd: '93', name: 'teacher' }]);
  return op;
}

/** A connection from `ip` that has sent nothing yet. */
function opened(ip: string): FakePeer {
  const peer = new FakePeer(ip);
  peer.session = chat.open(peer);
  return peer;
}

/** Capabilities of a client that resumes its session with a token. */
const RESUMING = ['errors', 'rooms', 'history', 'moderation'];

/** A server that keeps history, so that its sessions get resume tokens. */
function chatWithHistory(): Chat {
  return new Chat({
    operators: [teacher],
    banStore: store,
    clock: () => now,
    history: new MemoryHistoryStore({ retention: { maxMessages: 100, maxAgeMs: 0 } }),
  });
}

function drain(...peers: FakePeer[]): void {
  for (const p of peers) p.take();
}

beforeEach(() => {
  now = 1_000_000;
  store = new MemoryBanStore();
  chat = new Chat({ maxUsers: 10, operators: [teacher], banStore: store, clock: () => now });
});

describe('OPER', () => {
  it('grants with the right name and password', () => {
    const op = oper();
    expect(op.session.operator?.name).toBe('teacher');
  });

  it('refuses a wrong password or an unknown name with 1010', () => {
    const ann = connect('ann', MOD);
    send(ann, { cmd: '92', name: 'teacher', password: 'nope' });
    send(ann, { cmd: '92', name: 'nobody', password: 'sesame' });
    expect(ann.take()).toEqual([
      { cmd: '90', code: ErrorCode.NOT_AUTHORIZED, message: expect.any(String), ref: '92' },
      { cmd: '90', code: ErrorCode.NOT_AUTHORIZED, message: expect.any(String), ref: '92' },
    ]);
    expect(ann.session.operator).toBeUndefined();
  });

  it('applies a reconfigured operator list to new OPERs', () => {
    chat.reconfigure({ operators: [{ name: 'head', verify: (p) => p === 'x' }] });
    const ann = connect('ann', MOD);
    send(ann, { cmd: '92', name: 'teacher', password: 'sesame' });
    send(ann, { cmd: '92', name: 'head', password: 'x' });
    expect(ann.take().map((m) => m.cmd)).toEqual(['90', '93']);
  });

  it('ends the status of an operator a reload takes out of the list, and frees its name', () => {
    const op = oper();
    const staying = { name: 'head', verify: (p: string) => p === 'x' };
    const head = connect('staff', MOD);
    chat.reconfigure({ operators: [teacher, staying] });
    send(head, { cmd: '92', name: 'head', password: 'x' });
    drain(head);
    drain(op);
    chat.reconfigure({ operators: [staying] });
    expect(op.session.operator).toBeUndefined();
    expect(head.session.operator?.name).toBe('head');
    // Told at once, unasked; the operator that stays is told nothing.
    expect(op.take()).toEqual([
      {
        cmd: '90',
        code: ErrorCode.NOT_AUTHORIZED,
        message: "you are no longer operator teacher: the server's operators list changed",
      },
    ]);
    expect(head.take()).toEqual([]);
    // Its name is no operator's now: a member may take it, and no KICK names it any more.
    const taker = connect('teacher', MOD);
    expect(taker.session.nickname).toBe('teacher');
    drain(op);
    send(op, { cmd: '94', nickname: 'teacher' });
    expect(op.take()).toEqual([
      { cmd: '90', code: ErrorCode.NOT_AUTHORIZED, message: 'you are not an operator', ref: '94' },
    ]);
    expect(taker.closedWith).toBeUndefined();
  });

  it('ends the status proved with a password a reload replaced, and keeps one whose password stayed', () => {
    const withKey = (key: string): Operator => ({ ...teacher, key });
    chat.reconfigure({ operators: [withKey('old')] });
    const thief = oper('thief');
    const kept = oper('kept', '192.0.2.8');
    // The same password again, in a new list: kept, and nothing said.
    drain(thief, kept);
    chat.reconfigure({ operators: [withKey('old')] });
    expect(kept.session.operator?.name).toBe('teacher');
    expect(kept.take()).toEqual([]);
    // A new password: every status proved with the old one ends.
    chat.reconfigure({ operators: [withKey('new')] });
    expect(thief.session.operator).toBeUndefined();
    expect(kept.session.operator).toBeUndefined();
    const bob = connect('bob');
    drain(thief, bob);
    send(thief, { cmd: '94', nickname: 'bob' });
    expect(thief.take()).toEqual([
      { cmd: '90', code: ErrorCode.NOT_AUTHORIZED, message: 'you are not an operator', ref: '94' },
    ]);
    expect(bob.closedWith).toBeUndefined();
  });

  it('is an unknown command, answered with nothing, for a course client', () => {
    const course = connect('course');
    send(course, { cmd: '92', name: 'teacher', password: 'sesame' });
    expect(course.take()).toEqual([]);
    expect(course.session.operator).toBeUndefined();
  });
});

describe('KICK', () => {
  it('disconnects the member; "99" before "30" to moderation members, only "30" to course clients', () => {
    const op = oper();
    const course = connect('course');
    const bob = connect('bob', MOD);
    const watcher = connect('watcher', ['moderation']);
    drain(op, course, bob);
    send(op, { cmd: '94', nickname: 'BOB', reason: 'spam' });
    expect(bob.take()).toEqual([
      { cmd: '90', code: ErrorCode.KICKED, message: 'kicked by teacher: spam' },
    ]);
    expect(bob.closedWith).toBe('kicked');
    const notice = { cmd: '99', action: 'kick', nickname: 'bob', by: 'teacher', reason: 'spam' };
    const left = { cmd: '30', nickname: 'bob', userCount: 3 };
    expect(watcher.take()).toEqual([notice, left]);
    expect(op.take()).toEqual([notice, left]);
    expect(course.take()).toEqual([left]);
  });

  it('answers the operator with the "99" also when it is not in the room the kick is told in, and once when it is', () => {
    const bob = connect('bob');
    const staff = opened('192.0.2.2');
    send(staff, { cmd: '0', nickname: 'staffer', caps: [...MOD, 'rooms'], lobby: false });
    send(staff, { cmd: '100', room: 'staff' });
    send(staff, { cmd: '92', name: 'teacher', password: 'sesame' });
    drain(staff);
    send(staff, { cmd: '94', nickname: 'bob', reason: 'spam' });
    expect(bob.closedWith).toBe('kicked');
    const notice = { cmd: '99', action: 'kick', nickname: 'bob', by: 'teacher', reason: 'spam' };
    expect(staff.take()).toEqual([notice]);
    // In the room it is told in: the room's notice, not a second one.
    const lobbyOp = oper('lobbyop', '192.0.2.3');
    connect('ann');
    drain(lobbyOp);
    send(lobbyOp, { cmd: '94', nickname: 'ann', reason: 'spam' });
    expect(lobbyOp.take()).toEqual([
      { ...notice, nickname: 'ann' },
      { cmd: '30', nickname: 'ann', userCount: expect.any(Number) },
    ]);
  });

  it('refuses non-operators with 1010 and unknown members with 1011', () => {
    const ann = connect('ann', MOD);
    const bob = connect('bob', MOD);
    drain(ann);
    send(ann, { cmd: '94', nickname: 'bob' });
    expect(ann.take()).toMatchObject([{ cmd: '90', code: ErrorCode.NOT_AUTHORIZED, ref: '94' }]);
    expect(bob.closedWith).toBeUndefined();
    const op = oper();
    send(op, { cmd: '94', nickname: 'nobody' });
    expect(op.take()).toMatchObject([{ cmd: '90', code: ErrorCode.NO_SUCH_USER, ref: '94' }]);
  });
});

describe('BAN', () => {
  it('bans a nickname by its look-alike key: kicks the member and refuses it at CONNECT and RENAME', () => {
    const op = oper();
    const bob = connect('bob', MOD);
    op.take();
    send(op, { cmd: '95', mask: 'Bob', reason: 'spam' });
    const [list, ...rest] = op.take();
    expect(list).toEqual({
      cmd: '98',
      bans: [{ mask: 'Bob', by: 'teacher', reason: 'spam', expires: null }],
    });
    expect(rest).toEqual([
      { cmd: '99', action: 'ban', nickname: 'bob', by: 'teacher', reason: 'spam' },
      { cmd: '30', nickname: 'bob', userCount: 1 },
    ]);
    expect(bob.take()).toEqual([
      { cmd: '90', code: ErrorCode.BANNED, message: 'banned by teacher: spam' },
    ]);
    // Cyrillic "о": the same name to a reader.
    const course = new FakePeer();
    course.session = chat.open(course);
    send(course, { cmd: '0', nickname: 'b\u043eb' });
    expect(course.take()).toEqual([{ cmd: '01' }]);
    expect(course.closedWith).toBe('banned-nickname');
    const modern = new FakePeer();
    modern.session = chat.open(modern);
    send(modern, { cmd: '0', nickname: 'BOB', caps: ['errors'] });
    expect(modern.take()).toMatchObject([{ cmd: '90', code: ErrorCode.BANNED, ref: '0' }]);
    const ann = connect('ann');
    send(ann, { cmd: '5', newNickname: 'bob' });
    expect(ann.take()).toEqual([{ cmd: '50' }]);
    const eve = connect('eve', ['errors']);
    send(eve, { cmd: '5', newNickname: 'bob' });
    expect(eve.take()).toMatchObject([{ cmd: '90', code: ErrorCode.INVALID_NICKNAME, ref: '5' }]);
    expect(eve.closedWith).toBeUndefined();
  });

  it('holds a name with marks added to its letters for the same name: taken, whispered to, banned', () => {
    const op = oper();
    const victim = connect('victim', ['errors']);
    op.take();
    // A dot below, a line under: "vịctim: I quit" beside victim would read as victim's.
    const twin = new FakePeer();
    twin.session = chat.open(twin);
    send(twin, { cmd: '0', nickname: 'v\u1ecbctim' });
    expect(twin.take()).toEqual([{ cmd: '01' }]);
    const eve = connect('eve', ['errors']);
    send(eve, { cmd: '5', newNickname: 'vi\u0332ctim' });
    expect(eve.take()).toMatchObject([{ cmd: '50' }]);
    send(eve, { cmd: '2', to: 'v\u1ecbctim', msg: 'psst' });
    expect(victim.take()).toContainEqual(expect.objectContaining({ from: 'eve', msg: 'psst' }));
    send(op, { cmd: '95', mask: 'victim\u0323', reason: 'spam' });
    expect(victim.closedWith).toBe('banned');
  });

  it('bans by CIDR: IPv4, IPv6 and IPv4-mapped IPv6, at accept and for members', () => {
    const op = oper('op', '192.0.2.1');
    const v4 = connect('v4', MOD, '203.0.113.9');
    const v6 = connect('v6', MOD, '2001:db8::7');
    const other = connect('other', MOD, '198.51.100.1');
    send(op, { cmd: '95', mask: '203.0.113.0/24' });
    send(op, { cmd: '95', mask: '2001:db8::/32', seconds: 60 });
    expect(v4.closedWith).toBe('banned');
    expect(v6.closedWith).toBe('banned');
    expect(other.closedWith).toBeUndefined();
    expect(chat.admission.banned('203.0.113.200')).toBe(true);
    expect(chat.admission.banned('::ffff:203.0.113.200')).toBe(true);
    expect(chat.admission.banned('2001:db8:ffff::1')).toBe(true);
    expect(chat.admission.banned('203.0.114.1')).toBe(false);
    expect(chat.admission.banned('2001:db9::1')).toBe(false);
    // An IPv4-mapped mask bans the IPv4 address too.
    send(op, { cmd: '95', mask: '::ffff:10.0.0.7' });
    expect(chat.admission.banned('10.0.0.7')).toBe(true);
    expect(chat.admission.banned('10.0.0.8')).toBe(false);
  });

  it('refuses at CONNECT a connection accepted before its address was banned', () => {
    const op = oper('op', '192.0.2.1');
    const course = opened('203.0.113.9');
    const modern = opened('203.0.113.10');
    send(op, { cmd: '95', mask: '203.0.113.0/24' });
    send(course, { cmd: '0', nickname: 'late' });
    expect(course.take()).toEqual([{ cmd: '01' }]);
    expect(course.closedWith).toBe('banned-nickname');
    send(modern, { cmd: '0', nickname: 'later', caps: ['errors'] });
    expect(modern.take()).toMatchObject([
      { cmd: '90', code: ErrorCode.BANNED, message: 'this address is banned', ref: '0' },
    ]);
    expect(chat.find('late')).toBeUndefined();
    expect(chat.find('later')).toBeUndefined();
  });

  it('removes a member resumed from a connection accepted before its address was banned, before its "03"', () => {
    chat = chatWithHistory();
    const caps = RESUMING;
    const ann = opened('192.0.2.7');
    send(ann, { cmd: '0', nickname: 'ann', caps });
    const token = (ann.take().find((m) => m.cmd === '03') as { resume: string }).resume;
    const watcher = connect('watcher', ['moderation']);
    const later = opened('203.0.113.9');
    const op = oper('op', '192.0.2.1');
    send(op, { cmd: '95', mask: '203.0.113.0/24' });
    drain(watcher, op);
    send(later, { cmd: '0', nickname: 'ann', caps, resume: token });
    expect(later.take()).toMatchObject([{ cmd: '90', code: ErrorCode.BANNED }]);
    expect(later.closedWith).toBe('banned');
    expect(watcher.take().map((m) => m.cmd)).toEqual(['99', '30']);
    expect(chat.find('ann')).toBeUndefined();
  });

  it('tells a kicked or banned session that comes back with its token of it, once, and keeps it out of its rooms', () => {
    chat = chatWithHistory();
    const caps = RESUMING;
    const ann = connect('ann', undefined);
    drain(ann);
    const kicked = opened('192.0.2.7');
    send(kicked, { cmd: '0', nickname: 'kim', caps });
    send(kicked, { cmd: '100', room: 'physics' });
    const token = (kicked.take().find((m) => m.cmd === '03') as { resume: string }).resume;
    const op = oper('op', '192.0.2.1');
    // Its connection dead without a close: the "90" 2005 is written, and never read.
    send(op, { cmd: '94', nickname: 'kim', reason: 'spam' });
    expect(kicked.closedWith).toBe('kicked');
    drain(op, ann);
    const back = opened('192.0.2.7');
    send(back, { cmd: '0', nickname: 'kim', caps, resume: token });
    expect(back.take()).toEqual([
      { cmd: '90', code: ErrorCode.KICKED, message: 'kicked by teacher: spam' },
    ]);
    expect(back.closedWith).toBe('kicked');
    expect(chat.find('kim')).toBeUndefined();
    expect(ann.take()).toEqual([]);
    // Told once: joining again after it is no reconnect, and is let in.
    now += 1_000;
    const again = opened('192.0.2.7');
    send(again, { cmd: '0', nickname: 'kim', caps, resume: token });
    const welcome = again.take().find((m) => m.cmd === '03') as { resume: string } | undefined;
    expect(welcome).toBeDefined();
    // Nor is a kick long past: a token presented ten minutes later is an ordinary CONNECT.
    send(op, { cmd: '94', nickname: 'kim' });
    now += 10 * 60_000 + 1;
    const late = opened('192.0.2.7');
    send(late, { cmd: '0', nickname: 'kim', caps, resume: welcome!.resume });
    const lateWelcome = late.take().find((m) => m.cmd === '03') as { resume: string } | undefined;
    expect(lateWelcome).toBeDefined();
    // A ban of its address is told too when it comes back from another one.
    send(op, { cmd: '95', mask: '192.0.2.7' });
    expect(late.closedWith).toBe('banned');
    const moved = opened('198.51.100.4');
    send(moved, { cmd: '0', nickname: 'kim', caps, resume: lateWelcome!.resume });
    expect(moved.take()).toEqual([
      { cmd: '90', code: ErrorCode.BANNED, message: 'banned by teacher' },
    ]);
    expect(moved.closedWith).toBe('banned');
  });

  it('refuses a ban that would match the operator itself, and bans nothing', () => {
    const op = oper('op', '192.0.2.1');
    const other = connect('other', undefined, '198.51.100.7');
    drain(op);
    for (const mask of ['192.0.2.0/24', '0.0.0.0/0', '::ffff:192.0.2.1', 'OP']) {
      send(op, { cmd: '95', mask });
      expect(op.take(), mask).toMatchObject([
        {
          cmd: '90',
          code: ErrorCode.INVALID_FIELD,
          message: 'this ban would match you yourself',
          ref: '95',
        },
      ]);
    }
    expect(chat.bans.list(now)).toEqual([]);
    expect(other.closedWith).toBeUndefined();
    send(op, { cmd: '95', mask: '198.51.100.0/24' });
    expect(other.closedWith).toBe('banned');
  });

  /** Each BAN of `masks` from a fresh operator is refused (1002) with `message`; none is kept. */
  function refusesBans(masks: readonly string[], message: RegExp): FakePeer {
    const op = oper('op', '192.0.2.1');
    drain(op);
    for (const mask of masks) {
      send(op, { cmd: '95', mask });
      expect(op.take(), mask).toMatchObject([
        {
          cmd: '90',
          code: ErrorCode.INVALID_FIELD,
          message: expect.stringMatching(message),
          ref: '95',
        },
      ]);
    }
    expect(chat.bans.list(now)).toEqual([]);
    return op;
  }

  it('refuses a ban written as addresses are that is no address, which would otherwise ban a nickname nobody may have', () => {
    const op = refusesBans(
      [
        '127.0.0.01',
        '127.000.0.1',
        '127.1',
        '１27.0.0.1',
        '١٢٧.0.0.1',
        '1.2.3.4/33',
        '[::ffff:127.0.0.21]',
        '127。0。0。22',
        '0x7f.0.0.24',
        '::ffff:127.0.0.26/129',
        '127.*',
        '*!*@127.0.0.35',
        '*@127.0.0.36',
        '10.0.0.1-10.0.0.9',
        '10.0.0.1-9',
        '10.0.0.1,10.0.0.2',
        '2001:db8::1-2001:db8::9',
        '10.0.0.1\u201410.0.0.9',
        '10.0.0.1|10.0.0.2',
        '10.0.0.1 to 10.0.0.9',
        '10.0.0.1-*',
        '1O.0.0.1-1O.0.0.9',
        '*!*@10.0.0.1-9',
        '10.0.0.[1-9]',
      ],
      /is not an address or network/,
    );
    send(op, { cmd: '95', mask: '198.51.100.0/24' });
    expect(op.take()).toMatchObject([{ cmd: '98' }]);
  });

  it('refuses a ban of a name no nickname may be, which would match nobody', () => {
    const op = refusesBans(
      ['bob\u0000', 'two words', 'x'.repeat(40), 'bell\u0007', '*', '·'],
      /neither an address nor a nickname/,
    );
    // Names people may have are banned as nicknames, digits only or stars around a name included.
    for (const mask of ['2130706455', '*bob*', 'bob']) {
      send(op, { cmd: '95', mask });
      expect(op.take(), mask).toMatchObject([{ cmd: '98' }]);
    }
  });

  it('bans by name every nickname a member may have', () => {
    // Text a BAN refuses as no address would be a member nobody could ban by name.
    const op = oper();
    const mayBe = (name: string) => {
      const peer = connect(name, ['errors']);
      const member = peer.session.state === 'joined';
      if (member) chat.disconnect(peer.session, 'exit');
      return member;
    };
    const bans = (name: string) => {
      drain(op);
      send(op, { cmd: '95', mask: name });
      const answer = op.take();
      send(op, { cmd: '96', mask: name });
      drain(op);
      return answer.some((m) => m.cmd === '98') && !answer.some((m) => m.cmd === '90');
    };
    for (const name of ['1.2.3-1', '12:30-1', '3.14_15', '3.5mm2', '1.5-beta', '0.9.1+3']) {
      expect(mayBe(name), name).toBe(true);
      expect(bans(name), name).toBe(true);
    }
    fc.assert(
      fc.property(fc.stringMatching(/^[0-9a-fA-FxO.:/\-,;_~ [\]*%@!–lo]{1,20}$/), (name) => {
        if (mayBe(name)) expect(bans(name), name).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('tells a moderation member how long a ban lasts', () => {
    const op = oper();
    const watcher = connect('watcher', ['moderation']);
    connect('bob');
    op.take();
    send(op, { cmd: '95', mask: 'bob', seconds: 3600, reason: 'spam' });
    expect(watcher.take()[1]).toEqual({
      cmd: '99',
      action: 'ban',
      nickname: 'bob',
      by: 'teacher',
      reason: 'spam',
      seconds: 3600,
    });
  });

  it('expires by itself, and is pruned at the next change', () => {
    const op = oper();
    send(op, { cmd: '95', mask: 'bob', seconds: 10 });
    send(op, { cmd: '95', mask: '10.0.0.0/8', seconds: 20 });
    expect(op.take()[1]).toMatchObject({
      bans: [{ expires: now + 10_000 }, { expires: now + 20_000 }],
    });
    now += 10_000;
    expect(connect('bob').closedWith).toBeUndefined();
    drain(op);
    expect(chat.admission.banned('10.1.2.3')).toBe(true);
    expect(store.bans).toHaveLength(2);
    send(op, { cmd: '97' });
    expect(op.take()).toEqual([
      { cmd: '98', bans: [expect.objectContaining({ mask: '10.0.0.0/8' })] },
    ]);
    send(op, { cmd: '95', mask: 'eve' });
    expect(store.bans.map((b) => b.mask)).toEqual(['10.0.0.0/8', 'eve']);
    now += 10_000;
    expect(chat.admission.banned('10.1.2.3')).toBe(false);
  });

  it('holds at most MAX_BANS bans in force, each reason at most MAX_BAN_REASON characters', () => {
    const op = oper();
    send(op, { cmd: '95', mask: 'eve', reason: 'x'.repeat(MAX_BAN_REASON + 1) });
    expect(op.take()).toMatchObject([{ cmd: '90', code: ErrorCode.MESSAGE_TOO_LONG, ref: '95' }]);
    // Characters, not UTF-16 units: the longest reason of emoji is allowed.
    send(op, { cmd: '95', mask: 'eve', reason: '😀'.repeat(MAX_BAN_REASON) });
    expect(op.take()).toMatchObject([{ cmd: '98' }]);
    // The longest bans there can be: reasons of characters six bytes once escaped in JSON,
    // masks of nicknames of 32 characters of four bytes each.
    const worst = '\u0001'.repeat(MAX_BAN_REASON);
    for (let i = 1; i < MAX_BANS; i++) {
      const mask = `${i}${'😀'.repeat(32 - `${i}`.length)}`;
      send(op, { cmd: '95', mask, seconds: 10, reason: worst });
      if (i < MAX_BANS - 1) drain(op);
    }
    expect(store.bans).toHaveLength(MAX_BANS);
    // Its whole list in one "98" stays under what a client reads as one line (1 MiB).
    const [full] = op.take();
    expect(full).toMatchObject({ cmd: '98' });
    expect(Buffer.byteLength(JSON.stringify(full))).toBeLessThan(1024 * 1024);
    send(op, { cmd: '95', mask: 'one-more' });
    expect(op.take()).toMatchObject([{ cmd: '90', code: ErrorCode.TOO_MANY_BANS, ref: '95' }]);
    // A ban on a mask already banned replaces it, any spelling of it.
    send(op, { cmd: '95', mask: 'EVE', reason: 'again' });
    expect(op.take()[0]).toMatchObject({ cmd: '98' });
    expect(store.bans).toHaveLength(MAX_BANS);
    // Expired bans leave room; so does an UNBAN.
    now += 10_000;
    send(op, { cmd: '95', mask: 'one-more' });
    expect(op.take()[0]).toMatchObject({
      cmd: '98',
      bans: [{ mask: 'EVE' }, { mask: 'one-more' }],
    });
  });

  it('UNBAN lifts a ban by any spelling of its mask; BANS lists; non-operators are refused', () => {
    const op = oper();
    send(op, { cmd: '95', mask: '203.0.113.0/24' });
    send(op, { cmd: '95', mask: 'bob' });
    op.take();
    send(op, { cmd: '96', mask: '203.0.113.77/24' });
    expect(op.take()).toEqual([
      {
        cmd: '98',
        bans: [{ mask: 'bob', by: 'teacher', reason: '', expires: null }],
        removed: true,
      },
    ]);
    expect(chat.admission.banned('203.0.113.1')).toBe(false);
    send(op, { cmd: '96', mask: 'BOB' });
    expect(op.take()).toEqual([{ cmd: '98', bans: [], removed: true }]);
    expect(store.bans).toEqual([]);
    // Nothing lifted, and said so: a mask no ban has, and one too long to be any ban's.
    send(op, { cmd: '95', mask: '198.51.100.0/24' });
    op.take();
    send(op, { cmd: '96', mask: '198.51.100.7' });
    send(op, { cmd: '96', mask: 'x'.repeat(100) });
    expect(op.take().map((m) => (m as { removed?: boolean }).removed)).toEqual([false, false]);
    expect(chat.admission.banned('198.51.100.7')).toBe(true);
    send(op, { cmd: '97' });
    expect(op.take()[0]).not.toHaveProperty('removed');
    const ann = connect('ann', MOD);
    for (const req of [
      { cmd: '95', mask: 'x' },
      { cmd: '96', mask: 'x' },
      { cmd: '97' },
    ] as Request[])
      send(ann, req);
    expect(ann.take().map((m) => 'code' in m && m.code)).toEqual([1010, 1010, 1010]);
    const course = connect('course');
    send(course, { cmd: '97' });
    expect(course.take()).toEqual([]);
  });

  it('loads the bans its store holds, and survives a store that cannot write', () => {
    const loaded = new Chat({
      banStore: new MemoryBanStore([{ mask: '127.0.0.2', by: 't', reason: '', expires: null }]),
    });
    expect(loaded.admission.banned('127.0.0.2')).toBe(true);
    const failing = new Chat({
      operators: [teacher],
      banStore: {
        load: () => [],
        save: () => {
          throw Object.assign(new Error('disk full'), { code: 'ENOSPC' });
        },
      },
    });
    chat = failing;
    const op = oper();
    send(op, { cmd: '95', mask: '127.0.0.3' });
    // In force, and the operator told it is not kept past a restart.
    const unsaved =
      'the ban list could not be saved (ENOSPC): this change holds only until the server restarts';
    expect(op.take()).toEqual([
      {
        cmd: '98',
        bans: [{ mask: '127.0.0.3', by: 'teacher', reason: '', expires: null }],
        unsaved,
      },
    ]);
    expect(failing.admission.banned('127.0.0.3')).toBe(true);
    send(op, { cmd: '96', mask: '127.0.0.3' });
    expect(op.take()).toEqual([{ cmd: '98', bans: [], removed: true, unsaved }]);
    expect(failing.admission.banned('127.0.0.3')).toBe(false);
    // A list that was written says nothing of it.
    chat = new Chat({ operators: [teacher], banStore: new MemoryBanStore() });
    const saved = oper();
    send(saved, { cmd: '95', mask: '127.0.0.3' });
    send(saved, { cmd: '96', mask: '127.0.0.3' });
    expect(saved.take().map((m) => 'unsaved' in m)).toEqual([false, false]);
  });
});

describe('address matching', () => {
  const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255));
  it('an IPv4 address matches its mapped IPv6 spelling and any CIDR containing it', () => {
    fc.assert(
      fc.property(v4, fc.integer({ min: 0, max: 32 }), (parts, bits) => {
        const ip = parts.join('.');
        const list = new BanList(new MemoryBanStore());
        list.add({ mask: `${ip}/${bits}`, by: 't', reason: '', expires: null }, 0);
        expect(list.bansAddress(ip, 0)).toBeDefined();
        expect(list.bansAddress(`::ffff:${ip}`, 0)).toBeDefined();
        expect(parseIp(`::ffff:${ip}`)).toBe(parseIp(ip));
        // Flipping a bit inside the prefix leaves the block.
        if (bits > 0) {
          const n = ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
          const flipped = (n ^ (1 << (32 - bits))) >>> 0;
          const out = [24, 16, 8, 0].map((s) => (flipped >>> s) & 255).join('.');
          expect(list.bansAddress(out, 0)).toBeUndefined();
        }
      }),
    );
  });

  it('counts no timed ban as ended while the time is not known, and drops none', () => {
    let known = false;
    const list = new BanList(new MemoryBanStore(), [], () => known);
    const timed = { mask: '10.0.0.0/8', by: 't', reason: '', expires: 1_000 };
    list.add(timed, 0);
    list.add({ mask: 'mallory', by: 't', reason: '', expires: 1_000 }, 0);
    // A clock far ahead, not known to be right: both still in force, and kept.
    const later = 30 * 24 * 3600 * 1000;
    expect(list.bansAddress('10.1.2.3', later)).toEqual(timed);
    expect(list.bansNickname('mallory', later)).toBeDefined();
    expect(list.adds('mallory', later)).toBe(false);
    list.add({ mask: 'eve', by: 't', reason: '', expires: null }, later);
    expect(list.list(later).map((b) => b.mask)).toEqual(['10.0.0.0/8', 'mallory', 'eve']);
    known = true;
    expect(list.bansAddress('10.1.2.3', later)).toBeUndefined();
    expect(list.bansNickname('mallory', later)).toBeUndefined();
    expect(list.list(later).map((b) => b.mask)).toEqual(['eve']);
  });

  it('IPv6 text forms of one address parse alike, and junk is a nickname, never a crash', () => {
    expect(parseIp('2001:db8::1')).toBe(parseIp('2001:0db8:0:0:0:0:0:0001'));
    expect(parseIp('::')).toBe(0n);
    for (const bad of [
      '1.2.3',
      '1.2.3.256',
      '01.2.3.4',
      '1::2::3',
      ':::',
      'bob',
      '1:2:3:4:5:6:7:8:9',
    ])
      expect(parseIp(bad)).toBeUndefined();
    fc.assert(
      fc.property(fc.string({ maxLength: 50 }), (s) => {
        const list = new BanList(new MemoryBanStore());
        list.add({ mask: s, by: 't', reason: '', expires: null }, 0);
        list.bansAddress(s, 0);
        list.bansNickname(s, 0);
      }),
    );
  });
});

describe('OPER attempts', () => {
  it('are checked at most five at once per address, then one every ten seconds', () => {
    let checks = 0;
    chat = new Chat({
      operators: [
        {
          name: 'teacher',
          verify: (p) => {
            checks++;
            return p === 'sesame';
          },
        },
      ],
      clock: () => now,
    });
    const eve = connect('eve', MOD, '198.51.100.7');
    for (let i = 0; i < 8; i++) send(eve, { cmd: '92', name: 'teacher', password: `guess${i}` });
    expect(checks).toBe(5);
    expect(eve.take().map((m) => 'code' in m && m.code)).toEqual(new Array(8).fill(1010));
    // Another address is not held back by eve's attempts.
    const op = connect('op', MOD, '192.0.2.1');
    send(op, { cmd: '92', name: 'teacher', password: 'sesame' });
    expect(op.take()).toEqual([{ cmd: '93', name: 'teacher' }]);
    now += 10_000;
    drain(eve);
    send(eve, { cmd: '92', name: 'teacher', password: 'sesame' });
    expect(eve.take()).toEqual([{ cmd: '93', name: 'teacher' }]);
  });
});

describe('BAN and KICK bounds', () => {
  it('refuses an empty or overlong mask and an overlong reason, banning nothing', () => {
    chat = new Chat({ operators: [teacher], banStore: store, clock: () => now, maxMessage: 100 });
    const op = oper();
    send(op, { cmd: '95', mask: '  ' });
    send(op, { cmd: '95', mask: 'x'.repeat(65) });
    send(op, { cmd: '95', mask: 'bob', reason: 'r'.repeat(101) });
    send(op, { cmd: '94', nickname: 'op', reason: 'r'.repeat(101) });
    expect(op.take().map((m) => 'code' in m && m.code)).toEqual([1002, 1002, 1007, 1007]);
    expect(store.bans).toEqual([]);
    expect(op.closedWith).toBeUndefined();
  });
});

describe('the log', () => {
  it('keeps `ip` for the member a line is about, and names the operator’s address `byIp`', () => {
    const lines: { message: string; fields: Record<string, unknown> }[] = [];
    const record = (fields: Record<string, unknown>, message: string) =>
      lines.push({ message, fields });
    const logger = { debug() {}, info: record, warn: record, error: record };
    chat = new Chat({ maxUsers: 10, operators: [teacher], banStore: store, logger });
    const op = oper('op', '192.0.2.1');
    connect('zed', MOD, '192.0.2.9');
    send(op, { cmd: '95', mask: 'zed', reason: 'spam' });
    const ban = lines.find((l) => l.message === 'ban zed')!.fields;
    expect(ban).toMatchObject({ mask: 'zed', by: 'teacher', byIp: '192.0.2.1' });
    expect(ban.ip).toBeUndefined();
    const removed = lines.find((l) => l.message.startsWith('zed was banned'))!.fields;
    expect(removed).toMatchObject({ nickname: 'zed', ip: '192.0.2.9' });
    send(op, { cmd: '96', mask: 'zed' });
    const unban = lines.find((l) => l.message === 'unban zed')!.fields;
    expect(unban).toMatchObject({ mask: 'zed', found: true, byIp: '192.0.2.1' });
  });
});

describe('the fault boundary', () => {
  it('does not log the password of an OPER, nor the token of a CONNECT, whose handling failed', () => {
    const logged: object[] = [];
    const log = { debug() {}, info() {}, warn() {}, error: (f: object) => logged.push(f) };
    chat = new Chat({ operators: [teacher], logger: log });
    const ann = connect('ann', MOD);
    ann.session.failed(
      new Error('boom'),
      '{"cmd":"92","name":"teacher","password":"open \\"sesame\\""}{"cmd":"92","password": "x',
    );
    ann.session.failed(new Error('boom'), '{"cmd":"0","nickname":"x","resume":"tokenOfAnn"}');
    const text = JSON.stringify(logged);
    expect(text).not.toContain('sesame');
    expect(text).not.toContain('tokenOfAnn');
    expect(text).toContain('[redacted]');
    expect(text).not.toMatch(/"password\\": \\"x/);
  });
});
