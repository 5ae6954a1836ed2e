// Opens the SQLite file named in argv[2], appends one message and closes the store, with
// nothing else keeping the process alive: close() must still finish (and say so) before exit.
import { SqliteHistoryStore } from '../../src/store/sqlite-history.js';

const file = process.argv[2];
if (file === undefined) throw new Error('usage: sqlite-close-child.ts <file>');
const store = new SqliteHistoryStore(file, {
  retention: { maxMessages: 10, maxAgeMs: 0 },
  pruneIntervalMs: 0,
});
await store.append('r', { at: 0, from: 'child', msg: 'hello' });
await store.close();
process.stdout.write('closed\n');
