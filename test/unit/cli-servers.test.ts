import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_SERVERS, parseServers, showServers } from '../../src/cli/servers.js';

describe('--host with one server or several', () => {
  it('reads hosts, ports and IPv6 addresses, the port given to those without one', () => {
    expect(parseServers('127.0.0.1', 20825)).toEqual([{ host: '127.0.0.1', port: 20825 }]);
    expect(parseServers('a.example, b.example:4000,[::1]:5000,::1,[fe80::1]', 7)).toEqual([
      { host: 'a.example', port: 7 },
      { host: 'b.example', port: 4000 },
      { host: '::1', port: 5000 },
      { host: '::1', port: 7 },
      { host: 'fe80::1', port: 7 },
    ]);
  });

  it('says what is wrong with an entry, and never echoes a control character', () => {
    for (const [list, error] of [
      ['a,,b', /names no host/],
      ['a:0', /port in "a:0"/],
      ['a:65536', /port/],
      ['a:x', /port/],
      ['[::1', /no closing \]/],
      ['[::1]x', /not host:port/],
      ['[nope]:1', /not an IPv6 address/],
      // Two colons without brackets are an IPv6 address or a mistake, not a host name.
      ['127.0.0.1::20826', /not an IPv6 address/],
      ['a.example:1:2', /not an IPv6 address/],
      ['a b', /not a host name/],
      ['user@host', /not a host name/],
      ['\u001b]0;x\u0007:1', /not a host name/],
      [Array.from({ length: MAX_SERVERS + 1 }, () => 'a').join(','), /at most/],
    ] as const) {
      const parsed = parseServers(list, 1);
      expect(parsed).toMatch(error);
      expect(parsed).not.toMatch(/[\p{Cc}]/u);
    }
  });

  it('reads back every list it shows', () => {
    const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$/);
    const host = fc.oneof(
      fc.array(label, { minLength: 1, maxLength: 4 }).map((parts) => parts.join('.')),
      fc.ipV4(),
      fc.ipV6(),
    );
    const server = fc.record({ host, port: fc.integer({ min: 1, max: 65535 }) });
    fc.assert(
      fc.property(fc.array(server, { minLength: 1, maxLength: MAX_SERVERS }), (servers) => {
        expect(parseServers(showServers(servers), 9)).toEqual(servers);
      }),
    );
  });

  it('answers any text with servers it can dial or a reason, without throwing', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme-ascii', maxLength: 200 }), (list) => {
        const parsed = parseServers(list, 20825);
        if (typeof parsed === 'string') {
          expect(parsed).not.toMatch(/[\p{Cc}]/u);
          return;
        }
        for (const { host, port } of parsed) {
          expect(host).not.toBe('');
          expect(host).not.toMatch(/[\s\p{Cc},]/u);
          expect(Number.isInteger(port) && port >= 1 && port <= 65535).toBe(true);
        }
      }),
    );
  });
});
