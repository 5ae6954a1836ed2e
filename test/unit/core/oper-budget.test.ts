import { describe, expect, it } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import { FakePeer } from '../../helpers/fake-peer.js';

/**
 * docs/security.md, "Operators and bans": each OPER check costs about 50 ms of
 * CPU on purpose (a synchronous scrypt on the event loop), so an address gets
 * five at once, then one every ten seconds, and the server ten, then one every
 * two seconds, "so guessing cannot stall the event loop". These count the
 * checks that guesses from many addresses get in the same instant.
 */

/** A Chat whose one operator, teacher, checks passwords with `verify`. */
function chatWith(verify: (password: string) => boolean, clock: () => number = () => 0): Chat {
  return new Chat({ maxUsers: 1000, clock, operators: [{ name: 'teacher', verify }] });
}

function guessFrom(ips: readonly string[], guessesEach: number, told: unknown[] = []): number {
  let checks = 0;
  const chat = chatWith(() => {
    checks++;
    return false;
  });
  ips.forEach((ip, i) => {
    const peer = new FakePeer(ip);
    peer.session = chat.open(peer);
    peer.session.receive({ ok: true, request: { cmd: '0', nickname: `g${i}`, caps: ['errors'] } });
    for (let k = 0; k < guessesEach; k++) {
      peer.session.receive({
        ok: true,
        request: { cmd: '92', name: 'teacher', password: 'guess' },
      });
    }
    told.push(...peer.take());
  });
  return checks;
}

describe('OPER guesses', () => {
  it('from one address get five checks', () => {
    expect(guessFrom(['203.0.113.7'], 40)).toBe(5);
  });

  it('from the addresses of one IPv6 /64 (one host, one LAN) share those five', () => {
    // 2^64 addresses for the asking: 200 checks, some 9 s of the event loop, before the fix.
    const ips = Array.from({ length: 40 }, (_, i) => `2001:db8:0:1::${(i + 1).toString(16)}`);
    expect(guessFrom(ips, 5)).toBe(5);
  });

  it('from an IPv4-mapped address count as that IPv4 address', () => {
    expect(guessFrom(['203.0.113.7', '::ffff:203.0.113.7'], 5)).toBe(5);
  });

  it('refused by the server budget cost an address none of its own', () => {
    let checks = 0;
    let now = 0;
    const chat = chatWith(
      () => {
        checks++;
        return false;
      },
      () => now,
    );
    const guess = (ip: string, i: number) => {
      const peer = new FakePeer(ip);
      peer.session = chat.open(peer);
      peer.session.receive({ ok: true, request: { cmd: '0', nickname: `o${i}`, caps: [] } });
      peer.session.receive({ ok: true, request: { cmd: '92', name: 'teacher', password: 'x' } });
    };
    // Ten addresses spend the server's ten checks; the operator's address then tries five times.
    for (let i = 0; i < 10; i++) guess(`198.51.100.${i + 1}`, i);
    for (let i = 0; i < 5; i++) guess('203.0.113.9', 10 + i);
    expect(checks).toBe(10);
    // Two seconds on, the server has one check again, and the address still all five.
    now = 2_000;
    guess('203.0.113.9', 20);
    expect(checks).toBe(11);
  });

  it('from others leave an address an OPER succeeded from a budget of its own', () => {
    // Six addresses guessing once a second kept the real operator out for as long as they
    // went on: 10 of 10 of its OPERs refused over 25 s.
    let checks = 0;
    const chat = chatWith((password) => {
      checks++;
      return password === 'sesame';
    });
    let n = 0;
    const oper = (ip: string, password: string) => {
      const peer = new FakePeer(ip);
      peer.session = chat.open(peer);
      peer.session.receive({
        ok: true,
        request: { cmd: '0', nickname: `o${n++}`, caps: ['errors'] },
      });
      peer.take();
      peer.session.receive({ ok: true, request: { cmd: '92', name: 'teacher', password } });
      return peer.take();
    };
    expect(oper('203.0.113.9', 'sesame')).toMatchObject([{ cmd: '93' }]);
    // Forty guessing addresses spend what is left of the server's budget.
    for (let i = 0; i < 40; i++) oper(`198.51.100.${i + 1}`, 'guess');
    expect(checks).toBe(10);
    // A new address is refused unchecked; the operator's, checked, gets in.
    expect(oper('192.0.2.50', 'sesame')).toMatchObject([
      { cmd: '90', code: 1010, message: expect.stringMatching(/on this server/) },
    ]);
    expect(oper('203.0.113.9', 'sesame')).toMatchObject([{ cmd: '93' }]);
    expect(checks).toBe(11);
  });

  it('from many IPv4 addresses are bounded server-wide, and the others are told why', () => {
    // Per address alone, forty addresses (a small botnet, a cloud tenant's range) had 200
    // checks at once: some 9 s of the event loop (a bystander's RTT went from 1 ms to 1.5 s).
    const ips = Array.from({ length: 40 }, (_, i) => `198.51.100.${i + 1}`);
    const told: unknown[] = [];
    expect(guessFrom(ips, 5, told)).toBe(10);
    expect(told).toContainEqual(
      expect.objectContaining({ code: 1010, message: expect.stringMatching(/on this server/) }),
    );
  });
});
