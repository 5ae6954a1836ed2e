// Appends 1,000 messages to the SQLite file named in argv[2], in turns of 1..50 appends,
// and prints the highest id acknowledged after each turn. It never closes the store: the
// parent kills it with SIGKILL.
import { SqliteHistoryStore } from '../../src/store/sqlite-history.js';

const file = process.argv[2];
if (file === undefined) throw new Error('usage: sqlite-crash-child.ts <file>');
const store = new SqliteHistoryStore(file, {
  retention: { maxMessages: 10_000, maxAgeMs: 0 },
  pruneIntervalMs: 0,
});

let next = 1;
let turn = 0;
while (next <= 1_000) {
  const size = Math.min(1 + ((turn * 7) % 50), 1_001 - next);
  const turnAppends = [];
  for (let i = 0; i < size; i++) {
    turnAppends.push(store.append('crash', { at: next, from: 'child', msg: `message ${next}` }));
    next++;
  }
  const acked = await Promise.all(turnAppends);
  process.stdout.write(`ack ${acked[acked.length - 1]!.message.id}\n`);
  turn++;
}
// Stays alive, store open, until killed.
setInterval(() => {}, 60_000);
