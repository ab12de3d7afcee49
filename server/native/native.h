// What the native module's C files share: the instruction-set choice, the thread helper and
// the buffer cache (defined in loftq_native.c), the calibration statistics' float64 helpers
// (statistics.c) and the bf16 products of the output-error measure (bf16.c).
#ifndef LOFTQ_NATIVE_H
#define LOFTQ_NATIVE_H

#include <stddef.h>
#include <stdint.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define LOFTQ_X86 1
#endif

enum { MAX_THREADS = 256 };

typedef enum { ISA_GENERIC = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 } Isa;

/** Work on [first, last) of a range, as part `part` of a parallelFor. */
typedef void RangeFn(void *ctx, size_t first, size_t last, size_t part);

/** Runs fn over [0, total) in up to `threads` parts (part 0 on this thread); returns the
 *  number of parts. */
size_t parallelFor(size_t total, size_t align, int threads, RangeFn *fn, void *ctx);

/** A buffer of at least `bytes` from the reuse cache (NULL when memory ran out); give it back
 *  with its capacity. */
void *takeBuffer(size_t bytes, size_t *capacity);
void giveBuffer(void *p, size_t capacity);

/** Row band [r0, r1) of g's lower triangle (upper 0: columns [0, r1)) or upper triangle
 *  (1: columns [r0, dim)) as float32, row-major in `out`, zeros outside the triangle: a band
 *  of a held metric (loftq/heldMetric.ts). */
void triangleBandToFloat32(const double *g, size_t dim, size_t r0, size_t r1, int upper, float *out, int threads);

/** Whether this CPU has AVX512-BF16 (bf16.c's products). */
int bf16Supported(void);

/** Columns of a held bf16 row: cols rounded up to a whole pair. */
size_t bf16Stride(size_t cols);

/** Row band [r0, r1) of g's strictly lower triangle, columns [0, r1), as bf16 (round to
 *  nearest even) row-major with bf16Stride(r1) values per row, zeros elsewhere. */
void strictLowerBandToBf16(const double *g, size_t dim, size_t r0, size_t r1, uint16_t *out, int threads);

/** *total = Σ over the bands k (rows [cols[k] − rows[k], cols[k]) of a bf16 strictly lower
 *  triangle, as strictLowerBandToBf16 makes them) and their rows i, c < n, of
 *  b_ic·(2·(A_k·B)_ic + w_i·b_ic), B = b (dim × n float32) rounded to bf16, products summed
 *  in float32, the rest in float64, in row order: tr(bᵀ·H·b) for H = T + Tᵀ + diag(w). 0, -1
 *  when memory ran out, -2 without AVX512-BF16. */
int measureBf16(const uint16_t *const *a, const size_t *rows, const size_t *cols, size_t bands, const float *b,
                size_t dim, size_t n, const double *w, int threads, double *total);

/** out (rows × n) = A · Wᵀ in bf16 (A and W rounded to nearest even, float32 sums), W's n
 *  rows (each cols wide) given by pointers — float32, or bf16 bit patterns when rowsBf16: 0, -1
 *  when memory ran out, -2 without AVX512-BF16. */
int multiplyTransposedBf16(const float *a, size_t rows, size_t cols, const void *const *wRows, int rowsBf16, size_t n,
                           float *out, int threads);

/** Called for each band of gramChunkBf16 once its rows r0 … r1 of Xᵀ·X[:, r0:] (w = dim − r0
 *  columns) are in prod. */
typedef void GramBand(void *ctx, size_t r0, size_t r1, size_t w);

/** Bands [bandStarts[b], bandStarts[b + 1]) (each a multiple of 16) of Xᵀ·X for a chunk of n
 *  tokens (x: n × dim, xt its transpose) in bf16 products, float32 sums: each band's product
 *  into prod, then onBand. 0, -1 when memory ran out, -2 without AVX512-BF16. */
int gramChunkBf16(const float *x, const float *xt, size_t dim, size_t n, const size_t *bandStarts, size_t bands,
                  float *prod, GramBand *onBand, void *ctx, int threads);

/** g ← g·scale on and above the diagonal, mirrored below (G exactly symmetric). */
void symmetrizeScaled(double *g, size_t dim, double scale, int threads);

#endif
