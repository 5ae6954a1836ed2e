/**
 * A history.db restored from a backup lacks the messages written after the backup, and its
 * rooms' tops are lower: the ids after them were given out already. Opened beside the lock
 * file of the database it replaced, the store starts every room's new epoch, so a client
 * that saw those ids is told its gap was not recovered instead of missing what reuses them.
 */
import { execFileSync } from 'node:child_process';
import {
  appendFileSync,
  copyFileSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { expect, it } from 'vitest';
import type { MessageDraft } from '../../../src/core/history.js';
import type { SqliteHistoryStore } from '../../../src/store/sqlite-history.js';
import { useSqliteStores } from '../../helpers/sqlite-stores.js';

const { file, open } = useSqliteStores('confab-sqlite-restored-');
const draft = (msg: string): MessageDraft => ({ at: 0, from: 'ann', msg });

/** What `sqlite3 history.db ".backup <to>"` does, from another connection, the store open. */
async function backUp(to: string): Promise<void> {
  const reader = new Database(file(), { readonly: true });
  try {
    await reader.backup(to);
  } finally {
    reader.close();
  }
}

/** What kill -9 leaves: the store's connections gone, without its close. */
async function crash(store: SqliteHistoryStore): Promise<void> {
  const inside = store as unknown as {
    closed: boolean;
    timer?: NodeJS.Timeout;
    checkpointer?: { terminate(): Promise<number> };
    db: { close(): void };
    lock?: { release(): void };
  };
  inside.closed = true;
  clearInterval(inside.timer);
  await inside.checkpointer?.terminate();
  inside.db.close();
  inside.lock?.release();
}

/** Puts `backup` in place of history.db, as an operator restoring it with the server stopped. */
function restore(backup: string): void {
  for (const suffix of ['-wal', '-shm']) rmSync(`${file()}${suffix}`, { force: true });
  copyFileSync(backup, file());
}

/** A store that stored one chat in the lobby and stopped: the lobby's epoch. */
async function storedAndStopped(): Promise<string> {
  const first = open();
  const { epoch } = await first.append('lobby', draft('a'));
  await first.close();
  return epoch;
}

/** Opens the store again: no restore seen, the lobby's epoch kept. */
async function reopensAsItWas(epoch: string, what: string): Promise<void> {
  const store = open();
  expect(store.replaced, what).toBe(false);
  expect((await store.room('lobby')).epoch, what).toBe(epoch);
  await store.close();
}

it('starts new epochs on a file restored from a backup taken while it ran', async () => {
  const backup = `${file()}.backup`;
  const before = open();
  for (const msg of ['a', 'b', 'c']) await before.append('lobby', draft(msg));
  await backUp(backup);
  const d = await before.append('lobby', draft('d'));
  expect(d.message.id).toBe(4);
  const elsewhere = (await before.room('elsewhere')).epoch;
  await before.close();

  restore(backup);
  const after = open();
  expect(after.replaced).toBe(true);
  const room = await after.room('lobby');
  expect(room.top).toBe(3);
  expect(room.epoch).not.toBe(d.epoch);
  // Id 4 is given out again, in another epoch: a client at "4" of the old one sees the change.
  const again = await after.append('lobby', draft('d again'));
  expect(again.message.id).toBe(4);
  expect(again.epoch).toBe(room.epoch);
  // A room never written has a new epoch too (it derives from the seed).
  expect((await after.room('elsewhere')).epoch).not.toBe(elsewhere);
});

it('keeps the epochs of a file closed and opened again, restored or not', async () => {
  const copy = `${file()}.copy`;
  const epoch = await storedAndStopped();
  // A copy taken with the server stopped and put back before it ran again: nothing lost.
  copyFileSync(file(), copy);
  restore(copy);
  const second = open();
  expect(second.replaced).toBe(false);
  expect((await second.room('lobby')).epoch).toBe(epoch);
  const b = await second.append('lobby', draft('b'));
  expect(b.message.id).toBe(2);
  await second.close();
  await reopensAsItWas(epoch, 'opened again');
});

it.each([
  ['stopped', (store: SqliteHistoryStore) => store.close()],
  ['crashed', crash],
])('starts new epochs once, not again at the next open once the store %s', async (_, end) => {
  const backup = `${file()}.backup`;
  const first = open();
  await first.append('lobby', draft('a'));
  await backUp(backup);
  await first.append('lobby', draft('b'));
  await first.close();
  restore(backup);
  const second = open();
  expect(second.replaced).toBe(true);
  const again = await second.append('lobby', draft('b again'));
  await end(second);
  const third = open();
  expect(third.replaced).toBe(false);
  expect(await third.room('lobby')).toMatchObject({ epoch: again.epoch, top: again.message.id });
});

it('starts new epochs on a backup restored after a crash, once a second of commits followed the backup', async () => {
  const backup = `${file()}.backup`;
  const first = open();
  await first.append('lobby', draft('a'));
  await backUp(backup);
  // The mark is renewed at most once a second while the store commits.
  await sleep(1_100);
  const b = await first.append('lobby', draft('b'));
  await crash(first);
  restore(backup);
  const second = open();
  expect(second.replaced).toBe(true);
  expect((await second.room('lobby')).epoch).not.toBe(b.epoch);
});

it('starts new epochs on a backup restored after a crash within the second of commits after it', async () => {
  const backup = `${file()}.backup`;
  const first = open();
  await first.append('lobby', draft('a'));
  await backUp(backup);
  // No renewal of the mark since the backup: the commit's line beside the database says it.
  const b = await first.append('lobby', draft('b'));
  await first.append('elsewhere', draft('c'));
  await crash(first);
  restore(backup);
  const second = open();
  expect(second.replaced).toBe(true);
  expect((await second.room('lobby')).epoch).not.toBe(b.epoch);
});

it('starts new epochs on a backup restored after a renewal cut off before its database write', async () => {
  const backup = `${file()}.backup`;
  const first = open();
  await first.append('lobby', draft('a'));
  await backUp(backup);
  // The renewal the next commit makes gets no further than replacing the file beside.
  const other = new Database(file());
  other.exec(
    "CREATE TRIGGER refuse BEFORE UPDATE ON meta WHEN NEW.key = 'mark' BEGIN SELECT RAISE(ABORT, 'refused'); END",
  );
  other.close();
  await sleep(1_100);
  await first.append('lobby', draft('b'));
  await crash(first);
  restore(backup);
  const second = open();
  expect(second.replaced).toBe(true);
});

it('writes the lines of commits after a renewal into the file it wrote', async () => {
  const backup = `${file()}.backup`;
  const first = open();
  await first.append('lobby', draft('a'));
  await sleep(1_100);
  await first.append('lobby', draft('b'));
  await backUp(backup);
  await first.append('lobby', draft('c'));
  await crash(first);
  restore(backup);
  expect(open().replaced).toBe(true);
});

it('reads the commit lines also when the database holds the mark named next', async () => {
  const epoch = await storedAndStopped();
  // What a last renewal whose final write failed leaves beside the database, then a commit.
  const besideIt = (line: string) => {
    const db = new Database(file());
    const mark = db.prepare("SELECT value FROM meta WHERE key = 'mark'").pluck().get();
    db.close();
    writeFileSync(
      `${file()}-mark`,
      `${JSON.stringify({ mark: 'the-one-before', next: mark })}\n${line}\n`,
    );
  };
  besideIt('["lobby",1]');
  await reopensAsItWas(epoch, 'its commit held');
  // One the database lacks.
  besideIt('["lobby",2]');
  expect(open().replaced).toBe(true);
});

it('takes a crash within the second of commits for no restore, in every room', async () => {
  const first = open();
  const epochs = new Map<string, string>();
  for (const room of ['lobby', 'elsewhere', 'lobby', 'third']) {
    epochs.set(room, (await first.append(room, draft(room))).epoch);
  }
  await crash(first);
  const second = open();
  expect(second.replaced).toBe(false);
  for (const [room, epoch] of epochs) expect((await second.room(room)).epoch).toBe(epoch);
  await second.close();
});

it('reads a commit line cut off at its end as not written, and the one before it', async () => {
  const marks = `${file()}-mark`;
  const backup = `${file()}.backup`;
  const first = open();
  await first.append('lobby', draft('a'));
  await backUp(backup);
  await first.append('lobby', draft('b'));
  await crash(first);
  appendFileSync(marks, '["lobby",9');
  // Nothing restored: the database holds the last whole line's id.
  const second = open();
  expect(second.replaced).toBe(false);
  await crash(second);
  // Restored, and the line cut off again: the last whole line names an id the backup lacks.
  const lines = readFileSync(marks, 'utf8');
  writeFileSync(marks, `${lines}["lobby",2]\n["lob`);
  restore(backup);
  const third = open();
  expect(third.replaced).toBe(true);
});

it('takes a room forgotten after its last commit for no restore, its ids numbering on', async () => {
  const first = open();
  await first.append('lobby', draft('a'));
  const b = await first.append('lobby', draft('b'));
  await crash(first);
  // What forgetting the emptied room leaves: no row, and rooms without one number on.
  const forget = (forgotten: number) => {
    const db = new Database(file());
    db.exec("DELETE FROM batches WHERE room = 'lobby'; DELETE FROM rooms WHERE key = 'lobby'");
    db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('forgotten', ?)").run(
      String(forgotten),
    );
    db.close();
  };
  forget(b.message.id);
  const second = open();
  expect(second.replaced).toBe(false);
  await crash(second);
  // Numbering on from below the line's id would give it out again.
  const marks = readFileSync(`${file()}-mark`, 'utf8');
  writeFileSync(`${file()}-mark`, `${marks}${JSON.stringify(['lobby', b.message.id])}\n`);
  forget(b.message.id - 1);
  const third = open();
  expect(third.replaced).toBe(true);
});

it('takes a renewal of the mark cut off at any step for no restore', async () => {
  const marks = `${file()}-mark`;
  const epoch = await storedAndStopped();
  const written = () =>
    (JSON.parse(readFileSync(marks, 'utf8').split('\n')[0]!) as { mark: string }).mark;
  // Cut off after its first write (the database still has the old mark), then after its
  // second (the file does not name the database's as `mark` yet).
  for (const cut of [
    (mark: string) => ({ mark, next: 'never-written' }),
    (mark: string) => ({ mark: 'the-one-before', next: mark }),
  ]) {
    const beside = cut(written());
    writeFileSync(marks, JSON.stringify(beside));
    await reopensAsItWas(epoch, JSON.stringify(beside));
  }
});

it('reads a mark file that is no mark as none: no alarm, and the store opens', async () => {
  const marks = `${file()}-mark`;
  const epoch = await storedAndStopped();
  const cases: [string, () => void][] = [
    ['null', () => writeFileSync(marks, 'null')],
    ['an array', () => writeFileSync(marks, '[]')],
    ['a string', () => writeFileSync(marks, '"mark"')],
    ['an object mark', () => writeFileSync(marks, '{"mark":{}}')],
    ['garbage', () => writeFileSync(marks, '\u0000not json')],
    ['a huge file', () => writeFileSync(marks, `{"mark":"${'x'.repeat(10_000)}"}`)],
    ['a directory', () => mkdirSync(marks)],
    // A FIFO would block a read until someone writes to it.
    ['a FIFO', () => execFileSync('mkfifo', [marks])],
  ];
  for (const [what, make] of cases) {
    rmSync(marks, { recursive: true, force: true });
    make();
    await reopensAsItWas(epoch, what);
  }
});

it('starts no new epochs after a renewal at open that stopped before its database write', async () => {
  const marks = `${file()}-mark`;
  const epoch = await storedAndStopped();
  const db = new Database(file());
  const mark = db.prepare("SELECT value FROM meta WHERE key = 'mark'").pluck().get() as string;
  // What a renewal cut off after its database write leaves: the file names it as `next`.
  writeFileSync(marks, JSON.stringify({ mark: 'the-one-before', next: mark }));
  // The next renewal's database write is refused (a full disk), then the process dies.
  db.exec(
    "CREATE TRIGGER refuse BEFORE UPDATE ON meta WHEN NEW.key = 'mark' BEGIN SELECT RAISE(ABORT, 'refused'); END",
  );
  db.close();
  const second = open();
  expect(second.replaced).toBe(false);
  await crash(second);
  const again = new Database(file());
  again.exec('DROP TRIGGER refuse');
  again.close();
  await reopensAsItWas(epoch, 'after the crash');
});
