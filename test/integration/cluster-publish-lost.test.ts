/**
 * A room event (a join, a leave, a rename) is not stored: a node hands it to its own members
 * and PUBLISHes it on its command connection for the others. When that connection drops
 * while the PUBLISH is on its way (`CLIENT KILL TYPE normal`, a network blip), Presence has
 * the change and the other nodes never hear of it; their subscriber connections stayed up,
 * so no resync comes to mend their members' lists. What those members were shown must still
 * come to agree with Presence (USERS).
 */
import { describe, expect, it } from 'vitest';
import { lobbyUsers, resumeToken, shownAndListed, useRelayedCluster } from '../helpers/cluster.js';
import { withoutRedis } from '../helpers/redis.js';

const skip = withoutRedis();
const CAPS = ['errors', 'rooms', 'history', 'renames'];

// Node 0 reaches Redis through the relay, node 1 directly.
const cluster = useRelayedCluster(0, CAPS);
const { member, open } = cluster;

describe.skipIf(skip)('a room event whose PUBLISH was lost', () => {
  it('still reaches the other nodes, or their lists are mended', async () => {
    const watcher = await member(1, 'watcher');
    const mover = await member(0, 'mover');
    await watcher.waitFor((m) => m.cmd === '8' && m.nickname === 'mover', 1, 10_000);

    const dropped = cluster.relay.arm('"type":"renamed"');
    mover.sendPy({ cmd: '5', newNickname: 'moved' });
    await mover.expect('51', 10_000);
    await dropped;
    // Presence has the rename.
    expect(await lobbyUsers(watcher)).toEqual(['moved', 'watcher']);

    // What the watcher was shown, from its first "101": given a few seconds to come right.
    const { shown, listed } = await shownAndListed(
      watcher,
      (s) => s.includes('moved') && !s.includes('mover'),
    );
    expect(shown).toEqual(listed);
    // The node goes on answering its member.
    mover.drain();
    mover.sendPy({ cmd: '4' });
    await mover.expect('40', 10_000);
  }, 60_000);

  it('does not answer a whisper "22" (delivered) when it went nowhere', async () => {
    const target = await member(1, 'target');
    const sender = await member(0, 'sender');
    const dropped = cluster.relay.arm('"type":"whisper"');
    sender.sendPy({ cmd: '2', to: 'target', msg: 'psst' });
    const answer = await sender.waitFor(
      (m) => m.cmd === '22' || m.cmd === '20' || m.cmd === '90',
      1,
      10_000,
    );
    await dropped;
    if (answer.cmd !== '22') return;
    // Told it was delivered: it must arrive (a few seconds allowed).
    await target
      .waitFor((m) => m.cmd === '70' && m.msg === 'psst', 1, 5_000)
      .catch(() => undefined);
    expect(target.received.filter((m) => m.cmd === '70').map((m) => m.msg)).toEqual(['psst']);
  }, 60_000);

  it('a whisper whose PUBLISH was lost ends the sender’s connection (3005), its next request unanswered', async () => {
    await member(1, 'hearer');
    const sender = await member(0, 'teller');
    const dropped = cluster.relay.arm('"type":"whisper"');
    sender.drain();
    sender.sendPy({ cmd: '2', to: 'hearer', msg: 'lost' });
    sender.sendPy({ cmd: '4' });
    await dropped;
    await sender.expectClose(15_000);
    // Answered as a request Redis failed: transient, the client reconnects (and resumes).
    const answers = sender.received.filter((m) => ['22', '40', '90'].includes(m.cmd));
    expect(answers).toHaveLength(1);
    expect(answers[0]).toMatchObject({ cmd: '90', code: 3005 });
  }, 60_000);

  it('a join: the other nodes show the member', async () => {
    const watcher = await member(1, 'seer');
    const dropped = cluster.relay.arm('"type":"joined"');
    // Without "history": no read of it goes out with the PUBLISH, to fail with it (3005).
    const joiner = await member(0, 'joiner', ['errors', 'rooms', 'renames']);
    await dropped;
    const { shown, listed } = await shownAndListed(watcher, (s) => s.includes('joiner'));
    expect(listed).toContain('joiner');
    expect(shown).toEqual(listed);
    joiner.drain();
    joiner.sendPy({ cmd: '4' });
    await joiner.expect('40', 10_000);
  }, 60_000);

  it('a leave: the other nodes show the member gone', async () => {
    const watcher = await member(1, 'viewer');
    const leaver = await member(0, 'leaver');
    await watcher.waitFor((m) => m.cmd === '8' && m.nickname === 'leaver', 1, 10_000);
    const dropped = cluster.relay.arm('"type":"left"');
    leaver.sendPy({ cmd: '3' });
    await dropped;
    const { shown, listed } = await shownAndListed(watcher, (s) => !s.includes('leaver'));
    expect(listed).not.toContain('leaver');
    expect(shown).toEqual(listed);
  }, 60_000);

  it('closes the connection a resume on another node took the session from', async () => {
    const old = await member(1, 'ann');
    const token = resumeToken(old);
    const dropped = cluster.relay.arm('"type":"evict"');
    // The same member, from another connection, on node 0: Presence moves it there.
    const taken = await open(0);
    taken.sendPy({ cmd: '0', nickname: 'ann', caps: CAPS, resume: token });
    await dropped;
    await taken.waitFor((m) => m.cmd === '03' || m.cmd === '90', 1, 10_000);
    // Node 1 must close the old connection (2007): it is no member any more. Its heartbeat
    // finds that out, every second here, later on a loaded machine: some seconds allowed.
    await old.expectClose(15_000).catch(() => undefined);
    if (!old.isClosed) {
      // Still open, it speaks as "ann" whoever holds that name in Presence now.
      taken.close();
      const heard = await cluster.heardFrom(old, 'ann');
      expect(heard, 'a chat from a connection that is no member').toEqual([]);
    }
    expect(old.isClosed).toBe(true);
  }, 60_000);
});
