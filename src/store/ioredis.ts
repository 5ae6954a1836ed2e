/**
 * ioredis, for every module of confab: the only place that imports it (a layer rule in
 * .dependency-cruiser.cjs; type-only imports are free), so that loading it always runs
 * restoreFastStringPrototype() below.
 */
import { Command, Redis } from 'ioredis';

/**
 * ioredis declares `class VerbatimString extends String`, and making a class of String
 * turns String.prototype into a dictionary. V8 then compiles every method call on a string
 * (`charCodeAt`, `indexOf`, `slice`: the frame decoder's and the encoders' loops) as a
 * generic lookup, three to four times slower (docs/performance.md, "What made it fast").
 * V8 makes a prototype fast again when an inline cache reads a property through it from
 * an object, never from a primitive, and only once the reading function has feedback,
 * which V8 allocates after some calls (10 with Node 20's defaults). Once fast again, it
 * stays fast: later classes of String and Object.create(String.prototype) leave it so.
 * test/integration/string-prototype.test.ts asks V8 whether it worked.
 */
function restoreFastStringPrototype(): void {
  const wrapper = Object('');
  const read = (o: object): unknown => (o as { charCodeAt: unknown }).charCodeAt;
  for (let i = 0; i < 10_000; i++) read(wrapper);
}

restoreFastStringPrototype();

export { Command, Redis };
