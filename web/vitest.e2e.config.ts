import { defineConfig } from "vitest/config";

// Browser tests: real server, real Chromium. One file at a time, generous
// time-outs (a server restart and Chromium start-up are part of a test).
export default defineConfig({
  test: {
    include: ["e2e/**/*.e2e.test.mjs"],
    environment: "node",
    testTimeout: 120_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    sequence: { concurrent: false },
  },
});
