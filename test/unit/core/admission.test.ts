import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Admission } from '../../../src/core/admission.js';

describe('Admission', () => {
  it('admits up to the per-IP cap, then refuses until one is released', () => {
    const refused: string[] = [];
    const admission = new Admission(10, 2, (ip) => refused.push(ip));
    expect(admission.tryOpen('a')).toBe(true);
    expect(admission.tryOpen('a')).toBe(true);
    expect(admission.tryOpen('a')).toBe(false);
    expect(admission.tryOpen('b')).toBe(true);
    expect(refused).toEqual(['a']);
    admission.release('a');
    expect(admission.tryOpen('a')).toBe(true);
    expect(admission.open).toBe(3);
  });

  it('ignores a release without an open', () => {
    const admission = new Admission(1, 0);
    admission.release('x');
    expect(admission.tryOpen('y')).toBe(true);
    expect(admission.tryOpen('z')).toBe(false);
  });

  it('never passes either cap and counts exactly, whatever the sequence', () => {
    const step = fc.record({
      open: fc.boolean(),
      ip: fc.constantFrom('10.0.0.1', '10.0.0.2', '::1', ''),
    });
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 0, max: 4 }),
        fc.array(step, { maxLength: 200 }),
        (maxTotal, maxPerIp, steps) => {
          const admission = new Admission(maxTotal, maxPerIp);
          const held = new Map<string, number>();
          let total = 0;
          for (const { open, ip } of steps) {
            const mine = held.get(ip) ?? 0;
            if (open) {
              const expected = total < maxTotal && (maxPerIp === 0 || mine < maxPerIp);
              expect(admission.tryOpen(ip)).toBe(expected);
              if (expected) {
                held.set(ip, mine + 1);
                total++;
              }
            } else if (mine > 0) {
              admission.release(ip);
              held.set(ip, mine - 1);
              total--;
            }
            expect(admission.open).toBe(total);
          }
        },
      ),
    );
  });
});

describe('Admission per address', () => {
  it('counts an IPv6 /64 as one address, and an IPv4-mapped address as its IPv4 address', () => {
    const admission = new Admission(100, 2);
    // One host has its whole /64: a fresh address each time gets no fresh cap.
    expect(admission.tryOpen('2001:db8:0:1::1')).toBe(true);
    expect(admission.tryOpen('2001:db8:0:1::2')).toBe(true);
    expect(admission.tryOpen('2001:db8:0:1:ffff::3')).toBe(false);
    // Another /64 is another address.
    expect(admission.tryOpen('2001:db8:0:2::1')).toBe(true);
    admission.release('2001:db8:0:1::1');
    expect(admission.tryOpen('2001:db8:0:1::9')).toBe(true);
    expect(admission.tryOpen('203.0.113.7')).toBe(true);
    expect(admission.tryOpen('::ffff:203.0.113.7')).toBe(true);
    expect(admission.tryOpen('203.0.113.7')).toBe(false);
    admission.release('::ffff:203.0.113.7');
    expect(admission.tryOpen('203.0.113.7')).toBe(true);
    expect(admission.open).toBe(5);
  });

  it('counts NAT64-translated IPv4 clients apart, and a link-local neighbour by its own address', () => {
    const admission = new Admission(100, 1);
    // 64:ff9b::/96 carries each IPv4 client in its last 32 bits: one /64 for all of them.
    expect(admission.tryOpen('64:ff9b::c633:6401')).toBe(true);
    expect(admission.tryOpen('64:ff9b::c633:6402')).toBe(true);
    expect(admission.tryOpen('198.51.100.1')).toBe(false);
    expect(admission.tryOpen('fe80::1%eth0')).toBe(true);
    expect(admission.tryOpen('fe80::2%eth0')).toBe(true);
    expect(admission.tryOpen('fe80::1%eth0')).toBe(false);
  });
});
