import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** Why a small disk cannot be had here, if it cannot: it is a tmpfs, which needs root. */
export const noSmallDisk =
  process.platform !== 'linux' || process.getuid?.() !== 0
    ? 'the disk-full tests mount a tmpfs, which needs root on Linux'
    : undefined;

/**
 * A tmpfs of `size` (mount's notation, "2m") on a new directory, or why it could not be
 * mounted. Mount it in beforeAll, not when a file is imported: a run that filters its tests
 * out (-t) runs no afterAll and would leave it mounted.
 */
export function mountSmallDisk(size: string): { dir: string; unmount(): void } | string {
  const dir = mkdtempSync(path.join(tmpdir(), 'confab-full-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' });
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return 'mount -t tmpfs failed (no mount capability here)';
  }
  return {
    dir,
    unmount() {
      try {
        execFileSync('umount', [dir]);
      } catch {
        // Still busy (a file a test failed to close): detached now, freed once closed.
        execFileSync('umount', ['-l', dir]);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Writes zeros to `file` until the disk has no room left (at most 4 MiB). */
export function fill(file: string): void {
  const fd = openSync(file, 'w');
  const chunk = Buffer.alloc(4096);
  try {
    for (let i = 0; i < 1024; i++) writeSync(fd, chunk);
  } catch {
    // ENOSPC: full.
  } finally {
    closeSync(fd);
  }
}
