/**
 * Soak test (not run in CI): N clients chat for M minutes against a confab
 * server started here, checking that nothing is lost or reordered and that
 * the server's memory stays flat.
 *
 *   npm run soak -- --clients 50 --minutes 10 --rate 5
 *
 * Every message carries its sender's sequence number; each receiver checks
 * that, per sender, it sees 0, 1, 2, ... with no gap. The server's RSS is
 * sampled every few seconds; the summary compares the first and last thirds.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ChatClient } from '../src/client/chat-client.js';
import { tempDirUntilExit } from './lib/servers.js';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '20' },
    minutes: { type: 'string', default: '2' },
    rate: { type: 'string', default: '5', short: 'r' },
  },
});
const clients = Math.min(Number(values.clients), 2000);
const minutes = Math.min(Number(values.minutes), 24 * 60);
const rate = Math.min(Number(values.rate), 1000);

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// SQLite history in a data dir of its own: a server locks its data dir.
const dataDir = tempDirUntilExit('confab-soak-');
const server = spawn(
  process.execPath,
  [
    path.join(root, 'dist/cli/main.js'),
    'serve',
    '--data-dir',
    dataDir,
    '--port',
    '0',
    '--log-format',
    'json',
    '--max-users',
    String(clients),
    '--http-port',
    'off',
    '--rate-limit',
    '0',
    '--max-conns-per-ip',
    '0',
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const port = await new Promise<number>((resolve, reject) => {
  let out = '';
  server.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    const m = /"port":(\d+)/.exec(out);
    if (m) resolve(Number(m[1]));
  });
  server.once('exit', () => reject(new Error('server exited')));
});
// Warnings (slow consumers, floods) would mean the soak itself misbehaved.
let warnings = 0;
server.stdout.on('data', (d: Buffer) => {
  warnings += (d.toString().match(/"level":[4-6]0/g) ?? []).length;
});

function rssKiB(): number {
  const status = readFileSync(`/proc/${server.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

const members: ChatClient[] = [];
let sent = 0;
let delivered = 0;
let gaps = 0;
for (let i = 0; i < clients; i++) {
  const c = await ChatClient.connect({ port, nickname: `soak${i}` });
  const expected = new Map<string, number>();
  c.on('chat', ({ from, msg }) => {
    const seq = Number(msg.slice(0, msg.indexOf(' ')));
    const want = expected.get(from) ?? 0;
    if (seq !== want) gaps++;
    expected.set(from, seq + 1);
    delivered++;
  });
  members.push(c);
}
// A member only hears senders that joined before its own messages started; all
// join first, so every message should reach clients - 1 receivers.
const seqs = members.map(() => 0);
const end = Date.now() + minutes * 60_000;
const samples: number[] = [];
const started = Date.now();
const tick = setInterval(() => {
  for (const [i, c] of members.entries()) c.chat(`${seqs[i]!++} ${'m'.repeat(64)}`);
  sent += members.length;
}, 1000 / rate);
const sampler = setInterval(() => {
  samples.push(rssKiB());
  const secs = Math.round((Date.now() - started) / 1000);
  process.stdout.write(
    `\r${secs}s  sent ${sent}  delivered ${delivered}  gaps ${gaps}  server RSS ${(samples.at(-1)! / 1024).toFixed(1)} MiB   `,
  );
}, 2000);
await new Promise((r) => setTimeout(r, Math.max(0, end - Date.now())));
clearInterval(tick);
clearInterval(sampler);
// Let the last messages arrive: one round trip per client orders after them.
await Promise.all(members.map((c) => c.rtt()));
await Promise.all(members.map((c) => c.rtt()));
const expectedDeliveries = sent * (clients - 1);
const third = Math.max(1, Math.floor(samples.length / 3));
const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const early = avg(samples.slice(0, third));
const late = avg(samples.slice(-third));
process.stdout.write('\n');
console.log(
  JSON.stringify(
    {
      clients,
      minutes,
      ratePerClient: rate,
      sent,
      delivered,
      expectedDeliveries,
      lost: expectedDeliveries - delivered,
      outOfOrder: gaps,
      serverWarnings: warnings,
      rssMiB: {
        early: +(early / 1024).toFixed(1),
        late: +(late / 1024).toFixed(1),
        max: +(Math.max(...samples) / 1024).toFixed(1),
      },
    },
    null,
    2,
  ),
);
await Promise.all(members.map((c) => c.exit()));
server.kill('SIGTERM');
const ok = delivered === expectedDeliveries && gaps === 0 && warnings === 0;
console.log(ok ? 'soak: PASS' : 'soak: FAIL');
process.exitCode = ok ? 0 : 1;
