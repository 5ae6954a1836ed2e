import { afterAll, expect, it } from 'vitest';
import { removeCertificate, runHostile } from './driver.js';
import { FIXED_CASES } from './inputs.js';

afterAll(() => removeCertificate());

/** Fixed, so CI is repeatable; `npm run fuzz` explores other seeds. */
const SEED = 20_261_130;
const BATCHES = 80;

// On failure the report names the seed, the batch, its input (escaped), the
// server's last words and the single piece that fails alone, if one does.
it('survives the inputs that once broke it, over every transport they reach', async () => {
  const result = await runHostile({ seed: 0, cases: FIXED_CASES, keepGoing: true });
  if (result.report !== undefined) throw new Error(result.report);
  expect(result.batches).toBe(FIXED_CASES.length);
}, 60_000);

it(`survives ${BATCHES} batches of generated hostile input over TCP, TLS, WebSocket and raw HTTP (seed ${SEED})`, async () => {
  const result = await runHostile({ seed: SEED, batches: BATCHES, isolateMs: 30_000 });
  if (result.report !== undefined) throw new Error(result.report);
  expect(result.batches).toBe(BATCHES);
  // The attackers got through to the server, and it cut some of them off.
  expect(result.tally.joined).toBeGreaterThan(0);
  expect(result.tally.cutOff).toBeGreaterThan(0);
}, 120_000);
