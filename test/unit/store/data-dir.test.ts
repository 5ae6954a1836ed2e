import { statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeDirectory } from '../../../src/store/data-dir.js';
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
