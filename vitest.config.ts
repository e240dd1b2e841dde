import { defineConfig } from 'vitest/config';

// Unit tests: fast, no GPU, read ../shared fixtures directly. Slow end-to-end checks live in test/e2e (npm run test:e2e),
// GPU tests in test/gpu (npm run test:gpu).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/e2e/**', 'test/gpu/**', 'test/llama/**', 'node_modules/**'],
    testTimeout: 60_000,
    pool: 'forks',
  },
});
