/**
 * The message of the day (--motd): told in "03" to clients that negotiate extensions as they
 * join, never to a course client (whose "03" stays the course's) nor on a resume; a reload
 * changes it for the joins after it; the terminal client shows it, inert.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { ConfabServer } from '../../src/server.js';
import { ChatProcess } from '../helpers/chat-process.js';
import { startCluster } from '../helpers/cluster.js';
import { RawClient } from '../helpers/raw-client.js';
import { withoutRedis } from '../helpers/redis.js';
import { startConfab } from '../helpers/servers.js';

const MOTD = 'Be kind.\nHomework help in #physics.';

describe('the message of the day', () => {
  let server: ConfabServer | undefined;
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  it('is told to clients that negotiate as they join, not to course clients nor on a resume', async () => {
    server = await startConfab({ motd: MOTD });
    const port = server.address.port;
    const course = await RawJoin(port, 'course', {});
    const caps = ['rooms', 'history'];
    const modern = await RawJoin(port, 'modern', { caps });
    try {
      expect(Object.keys(course.welcome).sort()).toEqual(['cmd', 'serverAddress', 'userCount']);
      expect(modern.welcome.motd).toBe(MOTD);
      // Taken back on a new connection (the old one not yet known dead): the session goes
      // on, and is not told it again.
      const back = await RawJoin(port, 'modern', { caps, resume: modern.welcome.resume });
      modern.client.close();
      expect(back.welcome.resumed).toBe(true);
      expect(back.welcome.motd).toBeUndefined();
      back.client.close();
      // A reload changes it for the joins after it; emptied, it is not sent.
      await server.reload(loadConfig({ port: '0', 'http-port': 'off', motd: 'New rules.' }, {}));
      const later = await RawJoin(port, 'later', { caps: [] });
      expect(later.welcome.motd).toBe('New rules.');
      later.client.close();
      await server.reload(loadConfig({ port: '0', 'http-port': 'off' }, {}));
      const none = await RawJoin(port, 'none', { caps: [] });
      expect('motd' in none.welcome).toBe(false);
      none.client.close();
    } finally {
      course.client.close();
    }
  });

  it.skipIf(withoutRedis())(
    'is told on a node of a cluster as on one process',
    async () => {
      const cluster = await startCluster(1, ['--motd', MOTD]);
      try {
        const port = cluster.nodes[0]!.port;
        const modern = await RawJoin(port, 'modern', { caps: ['rooms', 'history'] });
        expect(modern.welcome.motd).toBe(MOTD);
        const course = await RawJoin(port, 'course', {});
        expect(Object.keys(course.welcome).sort()).toEqual(['cmd', 'serverAddress', 'userCount']);
        const back = await RawJoin(port, 'modern', {
          caps: ['rooms', 'history'],
          resume: modern.welcome.resume,
        });
        expect(back.welcome.resumed).toBe(true);
        expect(back.welcome.motd).toBeUndefined();
        for (const c of [modern, course, back]) c.client.close();
      } finally {
        await cluster.stop();
      }
    },
    60_000,
  );

  it('is refused with control characters other than line breaks, or past 2,000 characters', () => {
    expect(() => loadConfig({ motd: 'hi\u001b[2J' }, {})).toThrow(/motd/);
    expect(() => loadConfig({ motd: 'x'.repeat(2001) }, {})).toThrow(/motd/);
    expect(loadConfig({ motd: `${'x'.repeat(1999)}\n` }, {}).motd).toHaveLength(2000);
  });

  it('is shown by the terminal client under its welcome', async () => {
    server = await startConfab({ motd: MOTD });
    const ann = ChatProcess.start(['ann', '--port', String(server.address.port)]);
    try {
      await ann.waitFor('| Homework help in #physics.');
      const at = ann.output.indexOf('You are the 1st user.');
      expect(at).toBeGreaterThanOrEqual(0);
      expect(ann.output.indexOf('| Be kind.')).toBeGreaterThan(at);
    } finally {
      await ann.stop();
    }
  });
});

/** A CONNECT (with `extra`: caps, resume) and its "03". */
async function RawJoin(port: number, nickname: string, extra: object) {
  const client = await RawClient.open(port);
  client.sendPy({ cmd: '0', nickname, ...extra });
  return { client, welcome: await client.expect('03') };
}
