import { defineConfig } from 'vitest/config';

// `npm run bench`: the benchmarks are vitest files too (vitest runs the TypeScript), one at a time.
export default defineConfig({
  test: {
    include: ['test/bench/**/*.bench-run.ts'],
    fileParallelism: false,
    testTimeout: 600_000,
    hookTimeout: 120_000,
  },
});
