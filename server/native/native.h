// What the native module's C files share: the instruction-set choice, the thread helper and
// the buffer cache (defined in loftq_native.c), and the calibration statistics' float64 helpers (statistics.c).
#ifndef LOFTQ_NATIVE_H
#define LOFTQ_NATIVE_H

#include <stddef.h>
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

/** Row band [r0, r1) of the lower triangle T of l (transpose 0: columns [0, r1)) or of Tᵀ
 *  (1: columns [r0, dim)) as float32, row-major in `out`, zeros outside the triangle: a band
 *  of a held metric (loftq/heldMetric.ts). */
void lowerBandToFloat32(const double *l, size_t dim, size_t r0, size_t r1, int transpose, float *out, int threads);

/** g ← g·scale on and above the diagonal, mirrored below (G exactly symmetric). */
void symmetrizeScaled(double *g, size_t dim, double scale, int threads);

#endif
