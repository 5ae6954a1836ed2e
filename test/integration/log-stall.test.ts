import type { ChildProcess } from 'node:child_process';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { until } from '../helpers/cluster.js';
import { freePort, serveLogging, stopProcess } from '../helpers/servers.js';

/** Connects, sends CONNECT as `nickname`, and resolves with the first reply's cmd; rejects after `ms`. */
function join(port: number, nickname: string, ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let got = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no reply to ${nickname} in ${ms} ms`));
    }, ms);
    socket.on('error', () => {});
    socket.on('connect', () =>
      socket.write(`${JSON.stringify({ cmd: '0', nickname, caps: [] })}\n`),
    );
    socket.on('data', (d: Buffer) => {
      got += d.toString();
      const line = got.split('\n')[0];
      if (line === undefined || !got.includes('\n')) return;
      clearTimeout(timer);
      socket.destroy();
      resolve((JSON.parse(line) as { cmd: string }).cmd);
    });
  });
}

/**
 * `confab serve` logging in `format` to a pipe nobody reads (it fills, 64 KiB on Linux, and
 * stays full), once it answers a join.
 */
async function stalledServer(
  format: 'pretty' | 'json',
): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort();
  const child = serveLogging(
    format,
    port,
    'off',
    ['ignore', 'pipe', 'ignore'],
    // Hundreds of joins from one address, faster than its CONNECT budget allows.
    ['--max-users', '1000', '--rate-limit', '0'],
  );
  child.stdout!.pause();
  for (let i = 0; i < 100; i++) {
    const up = await join(port, `probe${i}`, 1_000).catch(() => undefined);
    if (up !== undefined) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { child, port };
}

// A server whose stdout is a pipe nobody reads (a stalled log shipper, a journald that is
// not keeping up): every join and leave logs a line. Written synchronously (the pretty
// format, the default), the first line that did not fit in the full pipe stopped the event
// loop, and from then on nobody was served, about 143 clients in.
describe.each(['pretty', 'json'] as const)(
  'confab serve --log-format %s with nobody reading its log',
  (format) => {
    it('serves on', { timeout: 60_000 }, async () => {
      const { child, port } = await stalledServer(format);
      try {
        const replies: string[] = [];
        for (let i = 0; i < 400; i++) replies.push(await join(port, `user${i}`, 3_000));
        expect(replies.every((cmd) => cmd === '03')).toBe(true);
      } finally {
        child.stdout!.resume();
        await stopProcess(child);
      }
    });

    // The same stalled reader at shutdown: SIGTERM was handled ("Bye bye~" logged) but the
    // process did not exit while its log was held. The held lines were written by a thread of
    // libuv's pool, blocked in write(2) on the full pipe, and Node's exit waited for that
    // thread until the reader read again, or systemd killed it. A pipe is now written as a
    // non-blocking stream, and a stop lets held lines go for a second, then drops them.
    it('exits on SIGTERM while nobody reads its log', { timeout: 60_000 }, async () => {
      const { child, port } = await stalledServer(format);
      try {
        // Two lines a client (joined, left) of about 150 bytes: the pipe is full.
        for (let i = 0; i < 600; i++) await join(port, `user${i}`, 3_000);
        const exited = new Promise<boolean>((resolve) => child.once('exit', () => resolve(true)));
        child.kill('SIGTERM');
        const ended = await Promise.race([
          exited,
          new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 10_000)),
        ]);
        expect(ended).toBe(true);
      } finally {
        child.stdout!.resume();
        await stopProcess(child);
      }
    });
  },
);

// A server whose log's disk is full (/dev/full answers every write with ENOSPC). pino's
// destination emitted the failed write as an error nobody listened for, so the process began
// to exit, and its exit hook then retried the write every 100 ms for good: nothing was
// served any more, SIGTERM did nothing, and the listener stayed open.
/**
 * `confab serve` in `format` with its stdout on `out` (closed here), its stderr collected, once
 * it answers a join; `fileSizeLimitKiB` caps the size of the files it writes.
 */
async function servingTo(
  format: 'pretty' | 'json',
  out: number,
  fileSizeLimitKiB?: number,
): Promise<{ child: ChildProcess; port: number; stderr: () => string }> {
  const port = await freePort();
  const child = serveLogging(
    format,
    port,
    'off',
    ['ignore', out, 'pipe'],
    ['--max-users', '1000', '--rate-limit', '0'],
    fileSizeLimitKiB,
  );
  closeSync(out);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  let up: string | undefined;
  for (let i = 0; i < 30 && up === undefined; i++) {
    up = await join(port, `probe${i}`, 1_000).catch(() => undefined);
    if (up === undefined) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  // Not left running when it never answered.
  if (up !== '03') await stopProcess(child);
  expect(up, stderr).toBe('03');
  return { child, port, stderr: () => stderr };
}

describe.each(['pretty', 'json'] as const)(
  'confab serve --log-format %s with its log on a full disk',
  (format) => {
    it('serves on, and exits on SIGTERM', { timeout: 60_000 }, async () => {
      const { child, port, stderr } = await servingTo(format, openSync('/dev/full', 'w'));
      try {
        // Two lines a client, each refused by the disk.
        const replies: string[] = [];
        for (let i = 0; i < 100; i++) replies.push(await join(port, `user${i}`, 3_000));
        expect(replies.every((cmd) => cmd === '03')).toBe(true);
        const exited = new Promise<number | null>((resolve) =>
          child.once('exit', (code) => resolve(code)),
        );
        child.kill('SIGTERM');
        const code = await Promise.race([
          exited,
          new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 10_000)),
        ]);
        expect(code, stderr()).toBe(0);
      } finally {
        await stopProcess(child);
      }
    });
  },
);

// A log file that reaches its size limit (here the process's RLIMIT_FSIZE: every write past
// it fails, EFBIG) and is then emptied, as a log rotation that truncates does: the lines
// refused meanwhile are gone, and the log says how many once it can write again.
describe.each(['pretty', 'json'] as const)(
  'confab serve --log-format %s with its log file full for a while',
  (format) => {
    it('says, once its log takes lines again, how many it lost', { timeout: 60_000 }, async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'confab-log-'));
      const log = path.join(dir, 'confab.log');
      // Appending: after the truncation, the next write lands at the start again.
      const { child, port, stderr } = await servingTo(format, openSync(log, 'a'), 8);
      try {
        // 8 KiB hold some forty lines; a join and a leave are two.
        for (let i = 0; i < 100; i++) expect(await join(port, `before${i}`, 3_000)).toBe('03');
        expect(statSync(log).size).toBe(8 * 1024);
        // Lines still held by the server's writer (on a loaded machine it falls behind by many
        // joins) would fill the emptied file again by themselves, and the lines after would be
        // refused: it tries them all against the full file first.
        await writesSettle(child.pid!);
        truncateSync(log, 0);
        for (let i = 0; i < 3; i++) expect(await join(port, `after${i}`, 3_000)).toBe('03');
        // A failure says what the log and stderr held, and whether the server still lives.
        await until(
          'the lines after',
          () => readFileSync(log, 'utf8').includes('after2'),
          20_000,
        ).catch((err: Error) => {
          const alive = child.exitCode === null && child.signalCode === null;
          throw new Error(
            `${err.message}; server ${alive ? 'running' : 'gone'}; log ${statSync(log).size} bytes:\n${readFileSync(log, 'utf8')}\nstderr:\n${stderr()}`,
          );
        });
        const text = readFileSync(log, 'utf8');
        const warning = text.split('\n').find((l) => l.includes('log lines lost: stdout'));
        expect(warning, text).toBeDefined();
        expect(warning).toContain('EFBIG');
        // The refused lines were counted: the hundred joins' and leaves' that did not fit.
        expect(Number(/"lines":(\d+)/.exec(warning!)?.[1])).toBeGreaterThan(100);
      } finally {
        await stopProcess(child);
        rmSync(dir, { recursive: true, force: true });
      }
    });
  },
);

/**
 * Waits until process `pid` has made no write system call for 300 ms, at most 10 s: its log
 * writer has tried every line it held.
 */
async function writesSettle(pid: number): Promise<void> {
  const writes = () => /syscw:\s*(\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1];
  let last = writes();
  let quiet = 0;
  for (let i = 0; i < 100 && quiet < 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const now = writes();
    quiet = now === last ? quiet + 1 : 0;
    last = now;
  }
}
