// Statistics for checking synthetic weights: moments and an exact (Jacobi) SVD in float64.

export function moments(x: Float32Array) {
  let s = 0;
  for (const v of x) s += v;
  const mean = s / x.length;
  let m2 = 0,
    m4 = 0;
  for (const v of x) {
    const d = (v - mean) ** 2;
    m2 += d;
    m4 += d * d;
  }
  m2 /= x.length;
  m4 /= x.length;
  return { mean, std: Math.sqrt(m2), kurtosis: m4 / (m2 * m2) };
}

/** All singular values of a rows×cols matrix, largest first (one-sided Jacobi, float64). */
export function singularValues(w: Float32Array, rows: number, cols: number): number[] {
  const a = Array.from({ length: rows }, (_, i) => Float64Array.from(w.subarray(i * cols, (i + 1) * cols)));
  for (let sweep = 0; sweep < 30; sweep++) {
    let off = 0;
    for (let p = 0; p < rows - 1; p++)
      for (let q = p + 1; q < rows; q++) {
        const x = a[p],
          y = a[q];
        let alpha = 0,
          beta = 0,
          gamma = 0;
        for (let j = 0; j < cols; j++) {
          alpha += x[j] * x[j];
          beta += y[j] * y[j];
          gamma += x[j] * y[j];
        }
        if (Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        off = Math.max(off, Math.abs(gamma) / Math.sqrt(alpha * beta));
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t),
          s = c * t;
        for (let j = 0; j < cols; j++) {
          const u = x[j],
            v = y[j];
          x[j] = c * u - s * v;
          y[j] = s * u + c * v;
        }
      }
    if (off < 1e-10) break;
  }
  return a.map((r) => Math.sqrt(r.reduce((acc, v) => acc + v * v, 0))).sort((p, q) => q - p);
}
