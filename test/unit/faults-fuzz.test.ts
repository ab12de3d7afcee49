// The fuzz harness with every consumer, as CI runs it: 1,000 seeded hostile checkpoints
// through the inspect path, the whole engine run (quantizeCheckpoint in-process, output
// files checked against the input: NaN/Inf refused by name or skipped, never written;
// relError recomputed from the files; nothing outside the output folder) and one
// language-server process (a plan pointing at each checkpoint must get diagnostics that
// agree with the reader, and the server must stay up). Prints the counts per error kind.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { CaseResult, runCases } from '../../server/src/tools/fuzz/runner';
import { quantizeConsumer } from '../../server/src/tools/fuzz/quantize-consumer';
import { LspObserver } from '../../server/src/tools/fuzz/lsp-observer';
import { InputError, UsageError } from '../../server/src/base/errors';
import { tempDir } from '../helpers';

const FUZZ_1000 =
  '1,000 fuzz cases through inspect, quantizeCheckpoint and the language server: ' + 'no crash, hang, miss or leak';

test(FUZZ_1000, async () => {
  const lsp = await LspObserver.start();
  const failures: CaseResult[] = [];
  try {
    const s = await runCases(
      0,
      1000,
      {
        seed: 77,
        root: tempDir('loftq-fuzz-all-'),
        timeoutMs: 10_000,
        consumers: [quantizeConsumer()],
        observers: [lsp.observe],
        typedErrors: [InputError, UsageError],
      },
      (r) => {
        if (r.outcome !== 'accepted' && r.outcome !== 'rejected') failures.push(r);
      },
    );
    const kinds = Object.entries(s.byKind)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
    const notes = Object.entries(s.byNote)
      .sort()
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
    console.log(
      `fuzz (seed 77): ${s.cases} cases in ${s.seconds.toFixed(1)} s; accepted ${s.accepted}, rejected ${s.rejected}` +
        `\n  by kind: ${kinds}\n  checked: ${notes}`,
    );
    assert.deepEqual(failures, []);
    assert.equal(s.crashes + s.hangs + s.missed + s.unhandledRejections, 0);
    assert.equal(lsp.cases, 1000);
    assert.ok(lsp.running, 'the language server is still up');
    // Each consumer really ran on a fair share of the cases.
    assert.equal(s.byNote['lsp: accepted checkpoint, no error'], s.accepted);
    assert.equal(s.byNote['lsp: refused checkpoint diagnosed'], s.rejected);
    assert.ok(s.byNote['quantize: files checked'] >= 20, notes);
    assert.ok(s.byNote['quantize: NaN/Inf refused by name, then skipped'] >= 5, notes);
    assert.ok(s.byNote['quantize: tensor name with / kept inside'] >= 1, notes);
  } finally {
    await lsp.stop();
  }
});
