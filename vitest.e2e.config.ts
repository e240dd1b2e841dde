import { defineConfig } from 'vitest/config';

// End-to-end checks: full-size calibration runs and the installed CLI as a user runs it (needs `npm run build`).
export default defineConfig({
  test: {
    include: ['test/e2e/**/*.e2e.test.ts'],
    testTimeout: 600_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
