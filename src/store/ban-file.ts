/**
 * Bans in `<data-dir>/bans.json`, read once at start and rewritten whole on
 * every change: written to a temporary file, then renamed over the old one,
 * so a crash mid-write leaves either the old list or the new, never half.
 * Writes are synchronous: bans change rarely, and the change must be on disk
 * before the operator is told it was made.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Ban, BanStore } from '../core/bans.js';
import { makeDirectory } from './data-dir.js';

function isBan(value: unknown): value is Ban {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v.mask === 'string' &&
    v.mask !== '' &&
    typeof v.by === 'string' &&
    typeof v.reason === 'string' &&
    (v.expires === null || (typeof v.expires === 'number' && Number.isFinite(v.expires)))
  );
}

export class BanFileError extends Error {
  override name = 'BanFileError';
}

export class FileBanStore implements BanStore {
  readonly file: string;

  constructor(readonly dir: string) {
    this.file = path.join(dir, 'bans.json');
  }

  /** The saved bans; none if the file does not exist yet. A file that is not a ban list is an error. */
  load(): readonly Ban[] {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new BanFileError(`cannot read ${this.file} (${(err as NodeJS.ErrnoException).code})`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new BanFileError(`${this.file} is not JSON`);
    }
    const bans = (parsed as { bans?: unknown } | null)?.bans;
    if (!Array.isArray(bans) || !bans.every(isBan))
      throw new BanFileError(
        `${this.file} is not a ban list ({"bans":[{mask,by,reason,expires}]})`,
      );
    return bans.map((b) => ({ mask: b.mask, by: b.by, reason: b.reason, expires: b.expires }));
  }

  save(bans: readonly Ban[]): void {
    makeDirectory(this.dir);
    const temp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(temp, `${JSON.stringify({ bans }, null, 2)}\n`, { mode: 0o600 });
    renameSync(temp, this.file);
  }
}
