import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_BAN_SECONDS, parseRequestText } from '../../../src/protocol/request-codec.js';
import {
  describeBan,
  describeModeration,
  describeUnban,
  formatDuration,
  HELP,
  parseCommand,
  parseDuration,
  timeLeft,
} from '../../../src/protocol/slash-commands.js';

describe('moderation requests', () => {
  it('parses each with its fields, optional ones left out when absent', () => {
    expect(parseRequestText('{"cmd":"92","name":"teacher","password":"p w"}')).toEqual({
      ok: true,
      request: { cmd: '92', name: 'teacher', password: 'p w' },
    });
    expect(parseRequestText('{"cmd":"94","nickname":"bob"}')).toEqual({
      ok: true,
      request: { cmd: '94', nickname: 'bob' },
    });
    expect(
      parseRequestText('{"cmd":"95","mask":"10.0.0.0/8","seconds":3600,"reason":"spam"}'),
    ).toEqual({
      ok: true,
      request: { cmd: '95', mask: '10.0.0.0/8', seconds: 3600, reason: 'spam' },
    });
    expect(parseRequestText('{"cmd":"96","mask":"bob"}')).toMatchObject({ ok: true });
    expect(parseRequestText('{"cmd":"97"}')).toEqual({ ok: true, request: { cmd: '97' } });
  });

  it('refuses wrong field types with 1002 and the command as ref', () => {
    for (const bad of [
      '{"cmd":"92","name":"t"}',
      '{"cmd":"92","name":"t","password":1}',
      '{"cmd":"94","nickname":"b","reason":5}',
      '{"cmd":"95","mask":"b","seconds":0}',
      '{"cmd":"95","mask":"b","seconds":1.5}',
      `{"cmd":"95","mask":"b","seconds":${MAX_BAN_SECONDS + 1}}`,
      '{"cmd":"95","mask":"b","seconds":"60"}',
      '{"cmd":"96"}',
    ]) {
      const result = parseRequestText(bad);
      expect(result, bad).toMatchObject({ ok: false, error: { code: 1002 } });
    }
  });

  it('never throws on generated requests with these codes, and accepts only well-typed ones', () => {
    const field = fc.oneof(fc.string(), fc.integer(), fc.double(), fc.boolean(), fc.constant(null));
    fc.assert(
      fc.property(
        fc.constantFrom('92', '94', '95', '96', '97'),
        fc.dictionary(
          fc.constantFrom('name', 'password', 'nickname', 'reason', 'mask', 'seconds', 'x'),
          field,
        ),
        (cmd, fields) => {
          const result = parseRequestText(JSON.stringify({ ...fields, cmd }));
          if (result.ok) {
            for (const [k, v] of Object.entries(result.request)) {
              if (k === 'seconds') expect(Number.isInteger(v)).toBe(true);
              else expect(typeof v).toBe('string');
            }
          } else {
            expect(result.error.ref).toBe(cmd);
          }
        },
      ),
    );
  });
});

describe('moderation slash commands', () => {
  it('parses \\oper, \\kick, \\ban with and without a duration, \\unban and \\bans', () => {
    expect(parseCommand('\\oper teacher s3cret')).toEqual({
      kind: 'oper',
      name: 'teacher',
      password: 's3cret',
    });
    expect(parseCommand('\\kick bob  stop  it')).toEqual({
      kind: 'kick',
      nickname: 'bob',
      reason: 'stop it',
    });
    expect(parseCommand('\\ban 10.0.0.0/8 2h spam bots')).toEqual({
      kind: 'ban',
      mask: '10.0.0.0/8',
      seconds: 7200,
      reason: 'spam bots',
    });
    expect(parseCommand('\\ban bob rude')).toEqual({
      kind: 'ban',
      mask: 'bob',
      seconds: undefined,
      reason: 'rude',
    });
    expect(parseCommand('\\unban bob')).toEqual({ kind: 'unban', mask: 'bob' });
    expect(parseCommand('\\bans')).toEqual({ kind: 'bans' });
    for (const word of ['oper', 'kick', 'ban', 'unban', 'bans'])
      expect(HELP.split('Operators:')[1]).toContain(`\\${word} `.trimEnd());
    for (const bad of ['\\oper teacher', '\\kick', '\\ban', '\\unban'])
      expect(parseCommand(bad).kind).toBe('invalid');
  });

  it('takes the rest of the line after the name as the password, spaces included', () => {
    // confab hash-password hashes the whole line, so "open sesame" is one password.
    expect(parseCommand('\\oper teacher open sesame')).toEqual({
      kind: 'oper',
      name: 'teacher',
      password: 'open sesame',
    });
    expect(parseCommand('\\oper  teacher  s3cret')).toEqual({
      kind: 'oper',
      name: 'teacher',
      password: 's3cret',
    });
  });

  it('durations round-trip through words', () => {
    expect(parseDuration('10m')).toBe(600);
    expect(parseDuration('7d')).toBe(604800);
    expect(parseDuration('0h')).toBeUndefined();
    expect(parseDuration('spam')).toBeUndefined();
    expect(parseDuration('2h30m')).toBe(9000);
    expect(parseDuration('1000000s')).toBe(1_000_000);
    expect(parseDuration('1H')).toBe(3600);
    for (const no of ['10M', '90min', '10y', '10', '0m0s', '3661d', '1h-5m', 'm'])
      expect(parseDuration(no), no).toBeUndefined();
    expect(parseDuration('3660d')).toBe(MAX_BAN_SECONDS);
    expect(formatDuration(3600)).toBe('1 hour');
    expect(formatDuration(5400)).toBe('90 minutes');
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 522 }),
        fc.constantFrom('s', 'm', 'h', 'd', 'w'),
        (n, u) => {
          const seconds = parseDuration(`${n}${u}`)!;
          const [count, unit] = formatDuration(seconds).split(' ');
          expect(parseDuration(`${count}${unit![0]}`)).toBe(seconds);
        },
      ),
    );
  });

  it('refuses a \\ban whose second word starts with a digit and is no duration', () => {
    // Sent, it had been the reason's first word, and the ban for good.
    for (const word of ['0m', '1000000000s', '10y', '90min', '10M', '5', '3660d1s'])
      expect(parseCommand(`\\ban yan ${word} spamming`)).toEqual({
        kind: 'invalid',
        message: expect.stringContaining(`"${word}" is no duration`),
      });
    for (const written of ['2h30m', '2h 30m', '2H 30m', '150m'])
      expect(parseCommand(`\\ban yan ${written} spamming`), written).toEqual({
        kind: 'ban',
        mask: 'yan',
        seconds: 9000,
        reason: 'spamming',
      });
    expect(parseCommand('\\ban yan spamming 3 times')).toMatchObject({
      seconds: undefined,
      reason: 'spamming 3 times',
    });
    fc.assert(
      fc.property(fc.stringMatching(/^[0-9][a-zA-Z0-9]{0,8}$/), (word) => {
        const parsed = parseCommand(`\\ban yan ${word} why`);
        if (parsed.kind === 'ban') expect(parsed.seconds).toBe(parseDuration(word));
        else expect(parsed.kind).toBe('invalid');
        expect(parsed.kind === 'ban' && parsed.reason.startsWith(word)).toBe(false);
      }),
    );
  });

  it('says how long a ban has left to the minute, in its two largest units', () => {
    expect(timeLeft(7_199_400)).toBe('2 hours');
    expect(timeLeft(7_140_000)).toBe('1 hour 59 minutes');
    expect(timeLeft(3 * 86_400_000 + 4 * 3_600_000 + 5 * 60_000)).toBe('3 days 4 hours');
    expect(timeLeft(86_400_000 + 5 * 60_000)).toBe('1 day');
    expect(timeLeft(45_000)).toBe('45 seconds');
    expect(timeLeft(-5)).toBe('1 second');
    expect(timeLeft(59_600)).toBe('1 minute');
    expect(timeLeft(Number.NaN)).toBe('an unknown time');
  });

  it('puts a ban of the list in words', () => {
    const now = 1_000_000;
    expect(
      describeBan(
        { mask: '203.0.113.0/24', by: 'teacher', reason: 'spam', expires: now + 7_200_000 },
        now,
      ),
    ).toBe('203.0.113.0/24 by teacher for 2 hours more (spam)');
    expect(describeBan({ mask: 'bob', by: 'teacher', reason: '', expires: null }, now)).toBe(
      'bob by teacher until unbanned',
    );
  });

  it('says of an unban what its answer says, and nothing for a server that does not say', () => {
    expect(describeUnban(' bob ', true)).toBe('Unbanned bob.');
    expect(describeUnban('10.0.0.9', false)).toBe(
      'No ban on 10.0.0.9 to lift: a ban is lifted by its own mask (\\bans lists them).',
    );
    expect(describeUnban('bob', undefined)).toBeUndefined();
    expect(describeUnban('bob', 'yes')).toBeUndefined();
  });

  it('puts notices in words', () => {
    expect(
      describeModeration({ action: 'kick', nickname: 'bob', by: 'teacher', reason: 'spam' }),
    ).toBe('bob was kicked by teacher (spam)');
    expect(
      describeModeration({
        action: 'ban',
        nickname: 'bob',
        by: 'teacher',
        reason: 'spam',
        seconds: 3600,
      }),
    ).toBe('bob was banned by teacher for 1 hour (spam)');
    expect(describeModeration({ action: 'ban', nickname: 'bob', by: 'teacher', reason: '' })).toBe(
      'bob was banned by teacher',
    );
  });
});
