import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  forgetSession,
  formatSessions,
  MAX_FILE_BYTES,
  MAX_SAVED_ROOMS,
  MAX_SAVED_SESSIONS,
  parseSessions,
  processAlive,
  type SavedRoom,
  type SavedSession,
  savedEntry,
  saveSession,
  serverKey,
  sessionFile,
  thisMachine,
} from '../../src/cli/saved-sessions.js';
import { useTempDir } from '../helpers/temp-dir.js';

const dir = useTempDir('confab-sessions-unit-');
const file = () => path.join(dir.path, 'confab', 'sessions.json');

const room: fc.Arbitrary<SavedRoom> = fc.oneof(
  fc.record({ room: fc.string({ minLength: 1, maxLength: 64 }) }),
  fc.record({
    room: fc.string({ minLength: 1, maxLength: 64 }),
    epoch: fc.string({ minLength: 1, maxLength: 24 }),
    id: fc.nat(),
  }),
);

const entry: fc.Arbitrary<SavedSession> = fc.record(
  {
    server: fc.string({ minLength: 1, maxLength: 40 }),
    nickname: fc.string({ minLength: 1, maxLength: 32 }),
    token: fc.string({ minLength: 1, maxLength: 64 }),
    pid: fc.integer({ min: 1, max: 2 ** 31 }),
    host: fc.string({ maxLength: 20 }),
    boot: fc.string({ maxLength: 36 }),
    at: fc.integer({ min: 0, max: 2 ** 45 }),
    rooms: fc.array(room, { minLength: 1, maxLength: MAX_SAVED_ROOMS }),
  },
  { requiredKeys: ['server', 'nickname', 'token', 'pid', 'host', 'boot', 'at'] },
);

/** A PID no process has: one that has just exited, and the kernel has not given out again. */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '']).pid!;
}

describe('the saved sessions file', () => {
  it('reads back what it wrote: the newest entry of each server and nickname, at most 50', () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 120 }), (entries) => {
        const read = parseSessions(formatSessions(entries));
        expect(read.length).toBeLessThanOrEqual(MAX_SAVED_SESSIONS);
        const keys = read.map((e) => `${e.server}\n${e.nickname}`);
        expect(new Set(keys).size).toBe(keys.length);
        for (const e of read) {
          // None newer was left out for it.
          const newest = Math.max(
            ...entries
              .filter((o) => o.server === e.server && o.nickname === e.nickname)
              .map((o) => o.at),
          );
          expect(e.at).toBe(newest);
          // Its rooms with it, as written.
          const same = entries.filter(
            (o) => o.server === e.server && o.nickname === e.nickname && o.at === e.at,
          );
          expect(same.map((o) => o.rooms)).toContainEqual(e.rooms);
        }
        // Reading it again changes nothing.
        expect(parseSessions(formatSessions(read))).toEqual(read);
      }),
    );
  });

  it('reads any text without throwing, and keeps only well-formed entries', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.json(),
          fc.jsonValue().map((v) => JSON.stringify({ sessions: v })),
          // Well-formed entries whose rooms are anything at all.
          fc
            .tuple(fc.array(entry, { maxLength: 5 }), fc.array(fc.jsonValue(), { maxLength: 5 }))
            .map(([es, junk]) =>
              JSON.stringify({
                sessions: es.map((e, i) => (i < junk.length ? { ...e, rooms: junk[i] } : e)),
              }),
            ),
        ),
        (text) => {
          const read = parseSessions(text);
          expect(read.length).toBeLessThanOrEqual(MAX_SAVED_SESSIONS);
          for (const e of read) {
            expect(typeof e.token).toBe('string');
            expect(e.token.length).toBeGreaterThan(0);
            expect(Number.isSafeInteger(e.pid) && e.pid > 0).toBe(true);
            for (const r of e.rooms ?? []) {
              expect(Object.keys(r).sort()).toEqual(
                r.epoch === undefined ? ['room'] : ['epoch', 'id', 'room'],
              );
              expect(typeof r.room).toBe('string');
              expect(r.room.length).toBeGreaterThan(0);
              if (r.epoch !== undefined) expect(Number.isSafeInteger(r.id)).toBe(true);
            }
          }
        },
      ),
    );
    // A PID of 0 or below would make kill(pid, 0) ask about a process group.
    for (const pid of [0, -1, 1.5, '7', null])
      expect(
        parseSessions(
          JSON.stringify({ sessions: [{ server: 's', nickname: 'n', token: 't', pid, at: 1 }] }),
        ),
      ).toEqual([]);
    expect(parseSessions('{"sessions": {"length": 1e9}}')).toEqual([]);
    expect(parseSessions('null')).toEqual([]);
  });

  it('finds a session under any spelling of the nickname the server takes for the same one', () => {
    const server = serverKey([{ host: '127.0.0.1', port: 1 }], false);
    saveSession(file(), server, 'ann', 'tok-1', deadPid());
    for (const name of ['ann', 'Ann', 'ANN', 'аnn' /* Cyrillic а */])
      expect(savedEntry(file(), server, name)?.token).toBe('tok-1');
    expect(savedEntry(file(), server, 'anne')?.token).toBeUndefined();
    expect(
      savedEntry(file(), serverKey([{ host: '127.0.0.1', port: 2 }], false), 'ann')?.token,
    ).toBe(undefined);
    // Not sent in plain text to what was a TLS listener, nor the other way.
    expect(
      savedEntry(file(), serverKey([{ host: '127.0.0.1', port: 1 }], true), 'ann')?.token,
    ).toBe(undefined);
  });

  it("keeps the session's rooms with its token, at most 20, and drops only what is malformed of them", () => {
    const server = serverKey([{ host: '127.0.0.1', port: 1 }], false);
    const rooms: SavedRoom[] = [{ room: 'physics', epoch: 'e1', id: 7 }, { room: 'math' }];
    saveSession(file(), server, 'ann', 'tok', deadPid(), rooms);
    expect(savedEntry(file(), server, 'ann')).toMatchObject({ token: 'tok', rooms });
    const many = Array.from({ length: 30 }, (_, i) => ({ room: `r${i}` }));
    saveSession(file(), server, 'ann', 'tok', deadPid(), many);
    expect(savedEntry(file(), server, 'ann')?.rooms).toEqual(many.slice(0, MAX_SAVED_ROOMS));
    // A file edited by hand: a room without a name, an id without an epoch, a huge name.
    const text = JSON.stringify({
      sessions: [
        {
          server: 's',
          nickname: 'n',
          token: 't',
          pid: 5,
          host: '',
          boot: '',
          at: 1,
          rooms: [
            { epoch: 'e', id: 1 },
            { room: 'a', id: 1 },
            { room: 'x'.repeat(5000) },
            { room: 'b', epoch: 'e', id: 2, extra: 1 },
          ],
        },
      ],
    });
    expect(parseSessions(text)).toEqual([
      expect.objectContaining({ token: 't', rooms: [{ room: 'b', epoch: 'e', id: 2 }] }),
    ]);
  });

  it('never lets one server make the file too large to read back, whatever its rooms and names', () => {
    const mine = serverKey([{ host: '127.0.0.1', port: 1 }], false);
    const hostile = serverKey([{ host: '127.0.0.1', port: 2 }], false);
    saveSession(file(), mine, 'ann', 'tok-a', deadPid());
    // Every room name of control characters (six bytes each in the file), 20 rooms, 49 names.
    const rooms = Array.from({ length: MAX_SAVED_ROOMS }, (_, i) => ({
      room: `${i}${'\u0001'.repeat(250)}`,
      epoch: '\u0002'.repeat(100),
      id: i,
    }));
    for (let i = 0; i < MAX_SAVED_SESSIONS - 1; i++)
      saveSession(file(), hostile, `n${i}`, `t${i}`, 1_000_000 + i, rooms);
    expect(statSync(file()).size).toBeLessThanOrEqual(MAX_FILE_BYTES);
    expect(savedEntry(file(), mine, 'ann')?.token).toBe('tok-a');
    // What an entry could hold of the rooms it kept, first first.
    const kept = savedEntry(file(), hostile, 'n0', () => false)?.rooms ?? [];
    expect(kept.length).toBeGreaterThan(0);
    expect(kept).toEqual(rooms.slice(0, kept.length));
  });

  it('keys a server by its address, a cluster by its nodes in any order', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ host: fc.domain(), port: fc.integer({ min: 1, max: 65535 }) }), {
          minLength: 1,
          maxLength: 8,
        }),
        fc.boolean(),
        (servers, tls) => {
          const shuffled = [...servers]
            .reverse()
            .map((s) => ({ ...s, host: `${s.host.toUpperCase()}.` }));
          expect(serverKey(shuffled, tls)).toBe(serverKey(servers, tls));
          expect(serverKey(servers, !tls)).not.toBe(serverKey(servers, tls));
        },
      ),
    );
    const many = Array.from({ length: 64 }, (_, i) => ({
      host: `node-${i}.example.org`,
      port: 20825,
    }));
    expect(serverKey(many, false)).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it('gives the token only once the client that saved it is gone', () => {
    const server = serverKey([{ host: 'h', port: 1 }], false);
    // The test's parent runs for sure.
    saveSession(file(), server, 'ann', 'live', process.ppid);
    expect(savedEntry(file(), server, 'ann')?.token).toBeUndefined();
    saveSession(file(), server, 'ann', 'dead', deadPid());
    expect(savedEntry(file(), server, 'ann')?.token).toBe('dead');
    expect(processAlive(process.ppid)).toBe(true);
    // A PID this process now has is a dead client's: nothing else runs under it.
    expect(processAlive(process.pid)).toBe(false);
  });

  it('never gives a token saved on another machine, and always one saved before this boot', () => {
    const server = serverKey([{ host: 'h', port: 1 }], false);
    saveSession(file(), server, 'ann', 'tok', process.ppid);
    const here = thisMachine();
    const running = () => true;
    const gone = () => false;
    expect(savedEntry(file(), server, 'ann', running, here)?.token).toBeUndefined();
    expect(savedEntry(file(), server, 'ann', gone, here)?.token).toBe('tok');
    // A home shared with another machine: its client's PID means nothing here.
    expect(
      savedEntry(file(), server, 'ann', gone, { ...here, host: 'elsewhere' })?.token,
    ).toBeUndefined();
    // This machine started again since: whatever has that PID now is not the client.
    if (here.boot !== '') {
      expect(savedEntry(file(), server, 'ann', running, { ...here, boot: 'later' })?.token).toBe(
        'tok',
      );
    }
  });

  it('keeps a server apart by the name TLS asks for', () => {
    const at = [{ host: 'h', port: 1 }];
    expect(serverKey(at, true, 'a.example')).not.toBe(serverKey(at, true, 'b.example'));
    expect(serverKey(at, true, 'a.example')).not.toBe(serverKey(at, true));
    expect(serverKey(at, false, 'a.example')).toBe(serverKey(at, false));
  });

  it('saves no token too long to keep, and loses none of the others for it', () => {
    const server = serverKey([{ host: 'h', port: 1 }], false);
    saveSession(file(), server, 'ann', 'tok', 7);
    expect(() => saveSession(file(), server, 'bob', 'x'.repeat(300_000), 8)).toThrow(/too long/);
    expect(parseSessions(readFileSync(file(), 'utf8')).map((e) => e.token)).toEqual(['tok']);
  });

  it('makes a loose state directory private, and trusts none it finds open to others', () => {
    const server = serverKey([{ host: 'h', port: 1 }], false);
    mkdirSync(path.dirname(file()), { recursive: true });
    chmodSync(path.dirname(file()), 0o777);
    saveSession(file(), server, 'ann', 'tok', deadPid());
    expect(statSync(path.dirname(file())).mode & 0o777).toBe(0o700);
    expect(savedEntry(file(), server, 'ann')?.token).toBe('tok');
    // Opened to others since: anyone could have put entries there.
    chmodSync(path.dirname(file()), 0o777);
    expect(savedEntry(file(), server, 'ann')?.token).toBeUndefined();
  });

  it('keeps one entry per client and server, across renames, and a quit removes only its own', () => {
    const a = serverKey([{ host: 'h', port: 1 }], false);
    const b = serverKey([{ host: 'h', port: 2 }], false);
    saveSession(file(), a, 'ann', 't1', 100);
    saveSession(file(), a, 'anna', 't2', 100);
    saveSession(file(), b, 'ann', 't3', 100);
    saveSession(file(), a, 'bob', 't4', 200);
    const names = () =>
      parseSessions(readFileSync(file(), 'utf8'))
        .map((e) => `${e.server === a ? 'a' : 'b'} ${e.nickname} ${e.pid}`)
        .sort();
    expect(names()).toEqual(['a anna 100', 'a bob 200', 'b ann 100']);
    forgetSession(file(), a, 100);
    expect(names()).toEqual(['a bob 200', 'b ann 100']);
    // No temporary files are left beside it.
    expect(readdirSync(path.dirname(file()))).toEqual(['sessions.json']);
  });

  it('keeps the newest 50 when more are saved', () => {
    const server = serverKey([{ host: 'h', port: 1 }], false);
    for (let i = 0; i < 60; i++) saveSession(file(), server, `user${i}`, `t${i}`, 1000 + i);
    const kept = parseSessions(readFileSync(file(), 'utf8'));
    expect(kept).toHaveLength(MAX_SAVED_SESSIONS);
    expect(kept.map((e) => e.token)).toContain('t59');
  });

  it('reads garbage on disk as no sessions, and writes over it', () => {
    const server = serverKey([{ host: 'h', port: 1 }], false);
    saveSession(file(), server, 'ann', 't', 5);
    writeFileSync(file(), '\u0000{{{');
    expect(savedEntry(file(), server, 'ann')?.token).toBeUndefined();
    saveSession(file(), server, 'ann', 't2', 5);
    expect(parseSessions(readFileSync(file(), 'utf8'))).toHaveLength(1);
  });

  it('lives under $XDG_STATE_HOME, or ~/.local/state when that is unset or relative', () => {
    expect(sessionFile({ XDG_STATE_HOME: '/s', HOME: '/h' })).toBe('/s/confab/sessions.json');
    expect(sessionFile({ HOME: '/h' })).toBe('/h/.local/state/confab/sessions.json');
    expect(sessionFile({ XDG_STATE_HOME: 'rel', HOME: '/h' })).toBe(
      '/h/.local/state/confab/sessions.json',
    );
  });
});
