import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeDirectory, unmakeDataDir } from '../../../src/store/data-dir.js';
import { useTempDir } from '../../helpers/temp-dir.js';

const temp = useTempDir('confab-dir-');

describe('makeDirectory', () => {
  it('makes a directory and its missing parents, and accepts one that exists', () => {
    const deep = path.join(temp.path, 'a', 'b', 'c');
    makeDirectory(deep);
    expect(statSync(deep).isDirectory()).toBe(true);
    makeDirectory(deep);
    makeDirectory(path.join(temp.path, 'a'));
    makeDirectory(path.relative(process.cwd(), path.join(temp.path, 'a', 'd')));
    expect(statSync(path.join(temp.path, 'a', 'd')).isDirectory()).toBe(true);
  });

  it('refuses a file in the way, itself or as a parent', () => {
    const file = path.join(temp.path, 'f');
    writeFileSync(file, '');
    expect(() => makeDirectory(file)).toThrow(/EEXIST/);
    expect(() => makeDirectory(path.join(file, 'x', 'y'))).toThrow(/ENOTDIR/);
  });
});

describe('unmakeDataDir', () => {
  it('removes a data dir the failed start made, and each parent it made that is empty', () => {
    const dataDir = path.join(temp.path, 'u1', 'p', 'd');
    mkdirSync(path.join(temp.path, 'u1'));
    const made = makeDirectory(dataDir);
    expect(made).toEqual([path.join(temp.path, 'u1', 'p'), dataDir]);
    for (const f of ['confab.lock', 'history.db', 'history.db-lock', 'history.db-mark'])
      writeFileSync(path.join(dataDir, f), 'x');
    const released: string[] = [];
    unmakeDataDir(dataDir, made, () =>
      released.push(String(existsSync(path.join(dataDir, 'confab.lock')))),
    );
    // The lock was let go after its file was removed, not before.
    expect(released).toEqual(['false']);
    expect(existsSync(path.join(temp.path, 'u1', 'p'))).toBe(false);
    expect(existsSync(path.join(temp.path, 'u1'))).toBe(true);
  });

  it('keeps a parent another server made its own directory in meanwhile, and files it does not know', () => {
    const dataDir = path.join(temp.path, 'u2', 'p', 'd');
    const made = makeDirectory(dataDir);
    mkdirSync(path.join(temp.path, 'u2', 'p', 'other'));
    writeFileSync(path.join(dataDir, 'history.db'), 'x');
    unmakeDataDir(dataDir, made, () => {});
    expect(existsSync(dataDir)).toBe(false);
    expect(readdirSync(path.join(temp.path, 'u2', 'p'))).toEqual(['other']);

    const withNotes = path.join(temp.path, 'u3', 'd');
    const made3 = makeDirectory(withNotes);
    writeFileSync(path.join(withNotes, 'history.db'), 'x');
    writeFileSync(path.join(withNotes, 'notes.txt'), 'mine');
    writeFileSync(path.join(withNotes, 'bans.json'), '[]');
    unmakeDataDir(withNotes, made3, () => {});
    expect(readdirSync(withNotes).sort()).toEqual(['bans.json', 'notes.txt']);
  });

  it('leaves a data dir that was there before the start, files and all', () => {
    const dataDir = path.join(temp.path, 'u4');
    mkdirSync(dataDir);
    expect(makeDirectory(dataDir)).toEqual([]);
    writeFileSync(path.join(dataDir, 'history.db'), 'x');
    let released = false;
    unmakeDataDir(dataDir, [], () => {
      released = true;
    });
    expect(released).toBe(true);
    expect(readdirSync(dataDir)).toEqual(['history.db']);
  });
});
