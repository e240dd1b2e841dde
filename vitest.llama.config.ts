import { defineConfig } from 'vitest/config';

// GGUF files checked by a real llama.cpp (needs `npm run llama:install`): npm run test:llama.
export default defineConfig({
  test: {
    include: ['test/llama/**/*.llama.test.ts'],
    testTimeout: 600_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
