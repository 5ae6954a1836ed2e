import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeDirectory } from '../../../src/store/data-dir.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'confab-dir-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('makeDirectory', () => {
  it('makes a directory and its missing parents, and accepts one that exists', () => {
    const deep = path.join(dir, 'a', 'b', 'c');
    makeDirectory(deep);
    expect(statSync(deep).isDirectory()).toBe(true);
    makeDirectory(deep);
    makeDirectory(path.join(dir, 'a'));
    makeDirectory(path.relative(process.cwd(), path.join(dir, 'a', 'd')));
    expect(statSync(path.join(dir, 'a', 'd')).isDirectory()).toBe(true);
  });

  it('refuses a file in the way, itself or as a parent', () => {
    const file = path.join(dir, 'f');
    writeFileSync(file, '');
    expect(() => makeDirectory(file)).toThrow(/EEXIST/);
    expect(() => makeDirectory(path.join(file, 'x', 'y'))).toThrow(/ENOTDIR/);
  });
});
