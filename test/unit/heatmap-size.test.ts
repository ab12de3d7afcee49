// The heatmap header's size line: the quantized matrices' stored bytes (HQQ's own storage, or
// codes + float32 scales for codebook quantizers) from a report, and how it reads.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { quantizedSize } from '../../webviews/src/quantizedSize';
import { quantizedText, quantText } from '../../webviews/src/sizeText';
import type { MatrixReport } from '../../server/src/protocol/lsp_ext';

const matrix = (name: string, shape: [number, number], quantizer: 'hqq' | 'nf', bits: number, dtype = 'BF16') =>
  ({ name, shape, dtype, quantizer, bits, rank: 8, iters: 5, blockSize: 64 }) as MatrixReport;

test('HQQ matrices count W_q, scale and zero in the compute dtype, and the meta', () => {
  // 2048² at 2 bits: 65,536 groups → W_q 1 MiB, scale + zero 2 × 65,536 × 2 B, meta 69 B (BF16);
  // 256×2048 at 3 bits: 8,192 groups → 820 int32 rows of 64 = 209,920 B, 32,768 B, 69 B.
  const q = quantizedSize([
    matrix('a.weight', [2048, 2048], 'hqq', 2),
    matrix('b.weight', [256, 2048], 'hqq', 3),
    { ...matrix('c.weight', [64, 64], 'hqq', 2), skipped: 'holds NaN' },
  ])!;
  assert.equal(q.bytes, 1_048_576 + 262_144 + 69 + 209_920 + 32_768 + 69);
  assert.equal(q.parameters, 2048 * 2048 + 256 * 2048);
  assert.equal(q.storage, 'hqq');
  assert.match(quantizedText(q), /^1\.55 MB, 2\.63 bits per weight \(HQQ's stored bytes: what transformers loads\)$/);
});

test('codebook matrices count packed codes and float32 scales; no matrices, no line', () => {
  const q = quantizedSize([matrix('a.weight', [64, 64], 'nf', 4, 'F32')])!;
  assert.deepEqual(q, { bytes: 2048 + 4 * 64, parameters: 4096, storage: 'fp32' });
  assert.match(quantizedText(q), /^2\.30 kB, 4\.50 bits per weight \(codes \+ float32 scales/);
  assert.equal(quantizedSize([]), undefined);
  assert.deepEqual(
    [quantText('nf', '2–4'), quantText('uniform', '3'), quantText('hqq', '1–8')],
    ['NF2–4', 'uniform 3-bit', 'HQQ 1–8-bit'],
  );
});
