import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/data-dirs.ts'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // Integration tests start real servers; two workers match the two cores.
    maxWorkers: 2,
    // `confab chat` saves its session token under the user's home by default: the tests'
    // clients must not write there. The tests of that file set their own state directory.
    env: { CONFAB_SAVE_SESSION: '0' },
  },
});
