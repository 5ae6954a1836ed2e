/**
 * The hostile-input suite for as long as you like (not run in CI):
 *
 *   npm run fuzz -- --minutes 10 [--seed S] [--batch I] [--history sqlite|memory]
 *
 * Random seed unless given; prints it first. On failure prints the failing
 * batch, the server's last output and the one piece that fails alone (if
 * any), and exits 1. `--batch I` replays batch I of seed S alone;
 * `--keep-going` restarts the server after a failure and goes on, to
 * collect several different failures in one run; `--max-depth N` leaves
 * out pieces nested deeper than N, to look past a known deep-nesting bug.
 */
import { parseArgs } from 'node:util';
import { removeCertificate, runHostile } from './driver.js';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '1' },
    seed: { type: 'string' },
    batch: { type: 'string' },
    'keep-going': { type: 'boolean', default: false },
    'max-depth': { type: 'string' },
    // The product's default store unless told otherwise.
    history: { type: 'string', default: 'sqlite' },
  },
});
const minutes = Math.min(Math.max(Number(values.minutes), 0), 24 * 60);
const seed = values.seed === undefined ? (Math.random() * 2 ** 31) | 0 : Number(values.seed);
const only = values.batch === undefined ? undefined : Number(values.batch);
if (!Number.isInteger(seed) || (only !== undefined && !Number.isInteger(only))) {
  console.error('--seed and --batch take integers');
  process.exit(2);
}
const history = values.history;
if (history !== 'sqlite' && history !== 'memory') {
  console.error('--history takes sqlite or memory');
  process.exit(2);
}

console.log(
  `hostile fuzz: seed ${seed}, ${history} history, ${only === undefined ? `${minutes} min` : `batch ${only} only`}`,
);
const started = Date.now();
const result = await runHostile({
  seed,
  until: started + minutes * 60_000,
  only,
  isolateMs: 120_000,
  keepGoing: values['keep-going'],
  history,
  ...(values['max-depth'] === undefined ? {} : { maxDepth: Number(values['max-depth']) }),
  log: (line) => console.log(line),
});
removeCertificate();
const took = ((Date.now() - started) / 1000).toFixed(0);
console.log(
  `${result.batches} batches in ${took} s, peak server RSS ${Math.round(result.peakRssKiB / 1024)} MiB, seed ${seed}; ` +
    `${result.tally.attacks} attackers, ${result.tally.joined} joined, ${result.tally.cutOff} cut off by the server, ` +
    `${result.tally.resumed} of ${result.tally.resumes} resumes took a session back`,
);
if (!result.ok) {
  // With --keep-going each failure was printed as it happened.
  console.error(values['keep-going'] ? 'FAILED: see the failures above' : result.report);
  process.exit(1);
}
