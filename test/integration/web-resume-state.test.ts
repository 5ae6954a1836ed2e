// The web client's resume bookkeeping (web/src/resume.ts), in Node, against a
// model of the server's rooms: whatever the client has received when its
// connection drops, `since` must ask for exactly what it is missing.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_SINCE, ResumeState } from '../../web/src/resume.js';

const ROOMS = ['lobby', 'physics', 'maths'];

/** One step of a session: a message stored in a room, or the connection dropping. */
const step = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({ kind: fc.constant('msg' as const), room: fc.constantFrom(...ROOMS) }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('drop' as const) }) },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('wipe' as const), room: fc.constantFrom(...ROOMS) }),
  },
);

describe('web resume state', () => {
  it('after any drops and epoch changes, every message of the current epoch is received exactly once, in order', () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 200 }), (steps) => {
        // The server: per room an epoch and its stored ids.
        const server = new Map(ROOMS.map((r) => [r, { epoch: 'e0', ids: [] as number[] }]));
        const state = new ResumeState('t');
        const got = new Map<string, number[]>(ROOMS.map((r) => [r, []]));
        let online = true;
        // The first CONNECT and joins: no since, nothing stored yet.
        for (const room of ROOMS) state.entered(room, server.get(room)!.epoch);

        const reconnect = () => {
          const since = new Map(state.since().map((p) => [p.room, p]));
          for (const room of ROOMS) {
            const s = server.get(room)!;
            const p = since.get(room);
            state.entered(room, s.epoch);
            // The server replays after since.id in the same epoch, else the latest (here: all).
            const after = p !== undefined && p.epoch === s.epoch ? p.id : 0;
            if (p === undefined || p.epoch !== s.epoch) got.set(room, []);
            for (const id of s.ids) {
              if (id > after) {
                got.get(room)!.push(id);
                state.seen(room, id);
              }
            }
          }
          online = true;
        };

        for (const s of steps) {
          if (s.kind === 'drop') {
            if (online) online = false;
            else reconnect();
            continue;
          }
          const room = server.get(s.room)!;
          if (s.kind === 'wipe') {
            room.epoch = `${room.epoch}'`;
            room.ids = [];
            // History is lost only by a server restart, which drops every connection.
            online = false;
            continue;
          }
          const id = (room.ids.at(-1) ?? 0) + 1;
          room.ids.push(id);
          if (online) {
            got.get(s.room)!.push(id);
            state.seen(s.room, id);
          }
        }
        if (!online) reconnect();
        for (const room of ROOMS) {
          const s = server.get(room)!;
          const mine = got.get(room)!;
          // Exactly the ids stored since the client last saw the epoch change, in order.
          expect(mine).toEqual(s.ids.slice(s.ids.length - mine.length));
          expect(new Set(mine).size).toBe(mine.length);
          expect(state.position(room)).toEqual({ epoch: s.epoch, id: s.ids.at(-1) ?? 0 });
        }
      }),
    );
  });

  it('keeps unacknowledged chats in order and answers acks and refusals by cid and connection', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({ kind: fc.constant('send' as const), room: fc.constantFrom(...ROOMS) }),
            fc.record({ kind: fc.constant('write' as const) }),
            fc.record({ kind: fc.constant('ack' as const), pick: fc.nat() }),
            fc.record({ kind: fc.constant('refuse' as const) }),
            fc.record({ kind: fc.constant('reconnect' as const) }),
          ),
          { maxLength: 100 },
        ),
        (ops) => {
          const state = new ResumeState('p');
          const model: { cid: string; sentOn: number }[] = [];
          const cids = new Set<string>();
          let connection = 1;
          for (const op of ops) {
            switch (op.kind) {
              case 'send': {
                const chat = state.send(op.room, 'x');
                // Unique, and within the protocol's 1-64 characters.
                expect(cids.has(chat.cid)).toBe(false);
                expect(chat.cid.length).toBeGreaterThan(0);
                expect(chat.cid.length).toBeLessThanOrEqual(64);
                cids.add(chat.cid);
                model.push({ cid: chat.cid, sentOn: 0 });
                break;
              }
              case 'write': {
                // The oldest not yet written on this connection goes out.
                const next = state.pending().find((c) => c.sentOn !== connection);
                const m = model.find((c) => c.sentOn !== connection);
                expect(next?.cid).toBe(m?.cid);
                if (next !== undefined && m !== undefined) next.sentOn = m.sentOn = connection;
                break;
              }
              case 'ack': {
                if (model.length === 0) {
                  expect(state.ack('nope')).toBeUndefined();
                  break;
                }
                const [m] = model.splice(op.pick % model.length, 1);
                expect(state.ack(m!.cid)?.cid).toBe(m!.cid);
                // Twice (a duplicate "71"): nothing more to take.
                expect(state.ack(m!.cid)).toBeUndefined();
                break;
              }
              case 'refuse': {
                const i = model.findIndex((c) => c.sentOn === connection);
                const refused = state.refused(connection);
                if (i < 0) expect(refused).toBeUndefined();
                else expect(refused?.cid).toBe(model.splice(i, 1)[0]!.cid);
                break;
              }
              case 'reconnect':
                connection++;
                break;
            }
            expect(state.pending().map((c) => c.cid)).toEqual(model.map((c) => c.cid));
          }
        },
      ),
    );
  });

  it('asks for at most the rooms the server accepts, and forgets a room it left', () => {
    const state = new ResumeState('q');
    const rooms = Array.from({ length: 30 }, (_, i) => `r${i}`);
    state.reset('token', rooms);
    expect(state.since()).toEqual([]);
    for (const room of ['lobby', ...rooms]) state.entered(room, 'E');
    expect(state.since()).toHaveLength(MAX_SINCE);
    state.left('r0');
    expect(state.joined()).not.toContain('r0');
    state.left('lobby');
    expect(state.joined()[0]).toBe('lobby');
    expect(state.token).toBe('token');
  });
});
