import { afterAll, expect, it } from 'vitest';
import { removeCertificate, runHostile } from './driver.js';

afterAll(() => removeCertificate());

/** Fixed, so CI is repeatable; `npm run fuzz` explores other seeds. */
const SEED = 20_261_130;
const BATCHES = 40;

it(`survives ${BATCHES} batches of generated hostile input over TCP, TLS and WebSocket (seed ${SEED})`, async () => {
  const result = await runHostile({ seed: SEED, batches: BATCHES, isolateMs: 30_000 });
  // The report names the seed, the batch, its input and the server's last words.
  expect(result.report).toBeUndefined();
  expect(result.batches).toBe(BATCHES);
}, 120_000);
