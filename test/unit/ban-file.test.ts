import { readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BanFileError, FileBanStore } from '../../src/store/ban-file.js';
import { useTempDir } from '../helpers/temp-dir.js';

const temp = useTempDir('confab-bans-');

describe('FileBanStore', () => {
  it('starts empty without creating anything, and creates the directory on first write', () => {
    const store = new FileBanStore(path.join(temp.path, 'data'));
    expect(store.load()).toEqual([]);
    expect(readdirSync(temp.path)).toEqual([]);
    const bans = [
      { mask: '10.0.0.0/8', by: 'teacher', reason: 'spam', expires: null },
      { mask: 'bob', by: 'teacher', reason: '', expires: 1767225600000 },
    ];
    store.save(bans);
    expect(new FileBanStore(path.join(temp.path, 'data')).load()).toEqual(bans);
    // Written through a temporary file that is renamed away.
    expect(readdirSync(path.join(temp.path, 'data'))).toEqual(['bans.json']);
  });

  it('refuses a file that is not a ban list rather than starting without its bans', () => {
    for (const text of [
      'not json',
      '{"bans":[{"mask":"x"}]}',
      '[]',
      '{"bans":[{"mask":"","by":"t","reason":"","expires":null}]}',
    ]) {
      writeFileSync(path.join(temp.path, 'bans.json'), text);
      expect(() => new FileBanStore(temp.path).load(), text).toThrow(BanFileError);
    }
  });
});
