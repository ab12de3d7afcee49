// The native backend is optional (it needs a C compiler when `node esbuild.mjs` runs): its
// tests skip without it — except where LOFTQ_REQUIRE_NATIVE=1 (CI, which has a compiler)
// says its absence is a failure, so a broken build cannot pass as a skip.
import * as assert from 'node:assert/strict';
import type { TestContext } from 'node:test';

export function requireNative(t: TestContext, problem: string | undefined): void {
  const required = process.env.LOFTQ_REQUIRE_NATIVE === '1';
  assert.ok(!required, `native backend required (LOFTQ_REQUIRE_NATIVE=1): ${problem}`);
  t.skip(`native backend not available: ${problem}`);
}
