import { afterAll, expect, it } from 'vitest';
import { removeCertificate, runHostile } from './driver.js';
import { FIXED_CASES } from './inputs.js';

afterAll(() => removeCertificate());

/** Fixed, so CI is repeatable; `npm run fuzz` explores other seeds. */
const SEED = 20_261_130;
const BATCHES = 80;
const MEMORY_BATCHES = 30;

// On failure the report names the seed, the batch, its input (escaped), the
// server's last words and the single piece that fails alone, if one does.
it('survives the inputs that once broke it, over every transport they reach', async () => {
  const result = await runHostile({ seed: 0, cases: FIXED_CASES, keepGoing: true });
  if (result.report !== undefined) throw new Error(result.report);
  expect(result.batches).toBe(FIXED_CASES.length);
}, 60_000);

// SQLite is the product's default store; memory answers within the turn, which orders differently.
it.each([
  ['sqlite', SEED, BATCHES],
  ['memory', SEED + 1, MEMORY_BATCHES],
] as const)(
  'survives generated hostile input over TCP, TLS, WebSocket and raw HTTP with %s history (seed %i, %i batches)',
  async (history, seed, batches) => {
    const result = await runHostile({ seed, batches, isolateMs: 30_000, history });
    if (result.report !== undefined) throw new Error(result.report);
    expect(result.batches).toBe(batches);
    // The attackers got through to the server, and it cut some of them off.
    expect(result.tally.joined).toBeGreaterThan(0);
    expect(result.tally.cutOff).toBeGreaterThan(0);
    // Resume tokens were presented, and some took a session back mid-attack.
    expect(result.tally.resumed).toBeGreaterThan(0);
  },
  120_000,
);
