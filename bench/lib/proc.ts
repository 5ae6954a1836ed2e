import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';

const TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** CPU time (user + system) a process has used, in microseconds, from /proc. */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces) start at ")".
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1e6) / TICKS;
}

/** CPU time of several processes together (a cluster's nodes and its Redis), in µs. */
export function cpuMicrosOf(pids: readonly number[]): number {
  let sum = 0;
  for (const pid of pids) sum += cpuMicros(pid);
  return sum;
}

function statusKiB(pid: number, key: 'VmRSS' | 'VmHWM'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`${key}:\\s+(\\d+)`).exec(status);
  return m ? Number(m[1]) : 0;
}

export const rssKiB = (pid: number) => statusKiB(pid, 'VmRSS');
export const peakRssKiB = (pid: number) => statusKiB(pid, 'VmHWM');

/** RSS of several processes together, in KiB. */
export const rssKiBOf = (pids: readonly number[]) => pids.reduce((n, p) => n + rssKiB(p), 0);
/** The sum of each process's own peak RSS (their peaks need not coincide), in KiB. */
export const peakRssKiBOf = (pids: readonly number[]) =>
  pids.reduce((n, p) => n + peakRssKiB(p), 0);

/**
 * Connections the kernel has completed but the server has not yet accepted, on the socket
 * listening on `port` (IPv4 or IPv6), or undefined if there is none. Linux lists listening
 * sockets first in /proc/net/tcp{,6}, so only the head of each file is read, however many
 * connections follow.
 */
export function acceptQueue(port: number): number | undefined {
  const local = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch {
      continue;
    }
    try {
      const chunk = Buffer.alloc(64 * 1024);
      let rest = '';
      let header = true;
      for (let reads = 0; reads < 64; reads++) {
        const n = readSync(fd, chunk, 0, chunk.length, null);
        if (n === 0) break;
        const lines = (rest + chunk.toString('latin1', 0, n)).split('\n');
        rest = lines.pop()!;
        for (const line of lines) {
          if (header) {
            header = false;
            continue;
          }
          // sl local_address rem_address st tx_queue:rx_queue ...
          const [, address, , state, queues] = line.trim().split(/\s+/);
          if (state !== '0A') {
            reads = 64;
            break;
          }
          if (address?.endsWith(local)) return Number.parseInt(queues!.split(':')[1]!, 16);
        }
      }
    } finally {
      closeSync(fd);
    }
  }
  return undefined;
}

/** This process's CPU time in microseconds. */
export function selfCpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** The CPUs a thread may run on, as Linux lists them ("0-1", "0,2-3"), or undefined. */
function allowedCpus(statusFile: string): string | undefined {
  try {
    return /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync(statusFile, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/** The CPUs a process (its main thread) may run on, or undefined where /proc does not say. */
export function affinity(pid: number): string | undefined {
  return allowedCpus(`/proc/${pid}/status`);
}

/** The CPUs each thread of a process may run on. */
export function threadAffinities(pid: number): string[] {
  return readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
    const cpus = allowedCpus(`/proc/${pid}/task/${tid}/status`);
    return cpus === undefined ? [] : [cpus];
  });
}

const CPU_LIST = /^\d+(-\d+)?(,\d+(-\d+)?)*$/;

/** The CPU numbers in a list like "0-2,5" (empty for anything else). */
export function cpuList(list: string): number[] {
  if (!CPU_LIST.test(list)) return [];
  return list.split(',').flatMap((part) => {
    const [from = 0, to = from] = part.split('-').map(Number);
    return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
  });
}

/**
 * Moves every thread of a running process onto the given CPUs (a list: "0", "0-1") with
 * taskset; threads it starts later inherit them. Throws with taskset's complaint.
 */
export function pinProcess(pid: number, cpus: string): void {
  execFileSync('taskset', ['-a', '-c', '-p', cpus, String(pid)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}
