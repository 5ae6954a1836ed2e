import { afterEach, describe, expect, it } from 'vitest';
import { ChatClient } from '../../src/client/chat-client.js';
import type { ConfabServer } from '../../src/server.js';
import { join, RawClient } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';

let server: ConfabServer | undefined;

afterEach(async () => {
  await server?.stop();
  server = undefined;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `read` until two readings `ms` apart agree (at most `tries` times); returns the last. */
async function settled(read: () => number, ms = 150, tries = 100): Promise<number> {
  let last = read();
  for (let i = 0; i < tries; i++) {
    await sleep(ms);
    const now = read();
    if (now === last) return now;
    last = now;
  }
  return last;
}

describe('stream connections', () => {
  it('closes each silent connection at its own handshake deadline, and only those', async () => {
    server = await startConfab({ 'handshake-timeout': '1' });
    const port = server.address.port;
    const first = await RawClient.open(port);
    // Arrives later, so its deadline is later than the first one's.
    await sleep(400);
    const second = await RawClient.open(port);
    const member = await join(port, 'punctual');
    await first.expectClose(5000);
    await second.expectClose(5000);
    expect(first.drain()).toEqual([]);
    expect(second.drain()).toEqual([]);
    // The member joined in time and is still served.
    member.sendPy({ cmd: '4' });
    await member.expect('40');
    expect(server.chat.connectionCount).toBe(1);
    member.close();
  });

  it('stops reading from a paused connection, and reads everything once resumed', async () => {
    server = await startConfab({ 'rate-limit': '0', 'max-queue': String(64 * 1024 * 1024) });
    const port = server.address.port;
    const sender = await join(port, 'sender');
    const reader = await ChatClient.connect({ port, nickname: 'reader' });
    let received = 0;
    let last = '';
    reader.on('chat', (m) => {
      received++;
      last = m.msg;
    });
    const peer = server.chat.find('sender')!.peer;
    peer.pause!(true);
    peer.pause!(true);
    // More than the kernel's buffers on both ends can take (tcp_wmem and tcp_rmem defaults).
    const count = 60_000;
    const body = 'x'.repeat(240);
    const frames = Array.from({ length: count }, (_, i) => `{"cmd": "7", "msg": "${i} ${body}"}`);
    // In many writes, so that the client's unsent bytes shrink as the server reads.
    for (let i = 0; i < count; i += 200) sender.write(frames.slice(i, i + 200).join(''));
    const delivered = await settled(() => received);
    expect(delivered).toBeLessThan(count);
    expect(sender.socket.writableLength).toBeGreaterThan(0);
    peer.pause!(false);
    peer.pause!(false);
    for (let i = 0; i < 300 && received < count; i++) await sleep(100);
    expect(received).toBe(count);
    expect(last).toBe(`${count - 1} ${body}`);
    expect(sender.socket.writableLength).toBe(0);
    await reader.exit();
    sender.close();
  });
});
