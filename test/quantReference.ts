// The plain definition the nearest-code kernel (server/wasm/kernels.ts assignCodes and
// quant/quantize.ts CodeLookup) is tested against.

const fr = Math.fround;

/** Index of the table entry nearest v (float32 distances, first index on ties). */
export function nearestCode(table: Float32Array, v: number): number {
  const last = table.length - 1;
  if (!(v > table[0])) return 0;
  if (v >= table[last]) return last;
  let lo = 0,
    hi = last; // table[lo] < v < table[hi] or v === table[lo]
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (table[mid] <= v) lo = mid;
    else hi = mid;
  }
  const dl = fr(v - table[lo]);
  const dh = fr(table[hi] - v);
  return dh < dl ? hi : lo;
}
