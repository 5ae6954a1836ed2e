import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BanFileError, FileBanStore } from '../../src/store/ban-file.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'confab-bans-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('FileBanStore', () => {
  it('starts empty without creating anything, and creates the directory on first write', () => {
    const store = new FileBanStore(path.join(dir, 'data'));
    expect(store.load()).toEqual([]);
    expect(readdirSync(dir)).toEqual([]);
    const bans = [
      { mask: '10.0.0.0/8', by: 'teacher', reason: 'spam', expires: null },
      { mask: 'bob', by: 'teacher', reason: '', expires: 1767225600000 },
    ];
    store.save(bans);
    expect(new FileBanStore(path.join(dir, 'data')).load()).toEqual(bans);
    // Written through a temporary file that is renamed away.
    expect(readdirSync(path.join(dir, 'data'))).toEqual(['bans.json']);
  });

  it('refuses a file that is not a ban list rather than starting without its bans', () => {
    for (const text of [
      'not json',
      '{"bans":[{"mask":"x"}]}',
      '[]',
      '{"bans":[{"mask":"","by":"t","reason":"","expires":null}]}',
    ]) {
      writeFileSync(path.join(dir, 'bans.json'), text);
      expect(() => new FileBanStore(dir).load(), text).toThrow(BanFileError);
    }
  });
});
