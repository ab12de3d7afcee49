// bf16 products: the output-error measure of calibrated LoftQ (loftq/heldMetric.ts), the
// strictly lower triangle of G times Rᵀ of which only tr(R·T·Rᵀ) is kept; and the linear
// layers of the calibration pass (model/linear.ts), X·Wᵀ as a bf16 model runs on a GPU.
// With AVX512-BF16 one instruction does 32 multiply-adds (pairs of bf16 into float32 sums)
// where an FMA does 16: on this project's machine 199 against 102 GFLOP/s in the same
// register-bound loop. Inputs are rounded to bf16 (8 significant bits, round to nearest
// even), sums are float32 as in every other product; the measure's diagonal part stays
// exact in float64 (heldMetric.ts), so rounding touches the off-diagonal terms only.
//
// Layout as the float32 products (loftq_native.c): A (the held band) row-major bf16 with its
// columns padded to an even count, so a row's pair (k, k+1) is one 32-bit broadcast; B packed
// into strips of 16 columns, each pair of B's rows interleaved (k, k+1 per column) so one
// 64-byte load feeds the 16 columns' pairs.

#include <string.h>
#include <stdint.h>
#include "native.h"

// KP and NC_STRIPS measured on Zen 4 (1 MiB L2 a core, 2026-12-08): 1024 pairs × 16 strips ran
// the pass's X·Wᵀ at 180–195 GFLOP/s a core where 128 × 32 ran 150 (C's float32 tile, read and
// written once per slice, was the difference); the measure gained 5 %. XᵀX keeps slices of
// GRAM_KP: each is summed in float32 lanes and then added to C, which keeps G's float32 sums
// over a chunk's 2048 tokens as accurate as before (one running sum of 2048 was 3e-6 off).
enum { MR = 6, STRIP = 16, KP = 1024 /* pairs of rows of B per slice: 2048 rows */, NC_STRIPS = 16, GRAM_KP = 128 };

static inline size_t minSize(size_t a, size_t b) { return a < b ? a : b; }

int bf16Supported(void) {
#ifdef LOFTQ_X86
  __builtin_cpu_init();
  // The packing also shuffles 16-bit lanes (AVX512-BW: every CPU with BF16 has it; checked anyway).
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
#else
  return 0;
#endif
}

/** bf16 of f, rounded to nearest even; NaN stays NaN. */
static inline uint16_t toBf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

typedef struct {
  const double *g;
  size_t dim, r0, ld;
  uint16_t *out;
} StrictBand;

static void strictBandRows(void *ctx, size_t first, size_t last, size_t part) {
  (void)part;
  const StrictBand *b = ctx;
  for (size_t k = first; k < last; k++) {
    const size_t i = b->r0 + k;
    uint16_t *o = b->out + k * b->ld;
    const double *gi = b->g + i * b->dim;
    for (size_t j = 0; j < b->ld; j++) o[j] = j < i ? toBf16((float)gi[j]) : 0;
  }
}

size_t bf16Stride(size_t cols) { return (cols + 1) & ~(size_t)1; }

void strictLowerBandToBf16(const double *g, size_t dim, size_t r0, size_t r1, uint16_t *out, int threads) {
  StrictBand b = {g, dim, r0, bf16Stride(r1), out};
  parallelFor(r1 - r0, 16, threads, strictBandRows, &b);
}

typedef struct {
  const float *b;
  size_t depth, n, pairs;
  uint16_t *packed; // strips × pairs × STRIP × 2
} PackBf16;

#ifdef LOFTQ_X86
/** Strips [s0, s1) of B (depth × n float32) as bf16 pairs, zero-padded to whole pairs and
 *  strips, 16 columns of two rows per step: each row converted by one instruction (round to
 *  nearest even), the two interleaved by one permute. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void packStripsBf16Avx512(void *ctx, size_t s0,
                                                                                       size_t s1, size_t part) {
  (void)part;
  const PackBf16 *k = ctx;
  __m512i interleave;
  {
    uint16_t idx[32];
    for (int j = 0; j < 16; j++) idx[2 * j] = (uint16_t)j, idx[2 * j + 1] = (uint16_t)(32 + j);
    interleave = _mm512_loadu_si512((const void *)idx);
  }
  for (size_t s = s0; s < s1; s++) {
    const size_t col0 = s * STRIP, width = minSize(k->n - col0, STRIP);
    const __mmask16 m = width >= STRIP ? (__mmask16)0xffff : (__mmask16)((1u << width) - 1);
    uint16_t *dst = k->packed + s * k->pairs * STRIP * 2;
    for (size_t q = 0; q < k->pairs; q++, dst += STRIP * 2) {
      const size_t p = 2 * q;
      const __m512 r0 = _mm512_maskz_loadu_ps(m, k->b + p * k->n + col0);
      const __m512 r1 = p + 1 < k->depth ? _mm512_maskz_loadu_ps(m, k->b + (p + 1) * k->n + col0) : _mm512_setzero_ps();
      const __m512i lo = _mm512_castsi256_si512((__m256i)_mm512_cvtneps_pbh(r0));
      const __m512i hi = _mm512_castsi256_si512((__m256i)_mm512_cvtneps_pbh(r1));
      _mm512_storeu_si512((void *)dst, _mm512_permutex2var_epi16(lo, interleave, hi));
    }
  }
}

// NV strips per call, MR × NV float32 accumulators (the float32 kernel's shape).
#define KERNEL_BF16(NV)                                                                                    \
  __attribute__((target("avx512f,avx512bf16"))) static void kernelBf16x##NV(                               \
      const uint16_t *const *rowsA, const uint16_t *b, size_t stripStride, int kq, float *c, size_t ldc,   \
      int mr, int nc, int add) {                                                                           \
    __m512 acc[MR][NV];                                                                                    \
    for (int r = 0; r < MR; r++)                                                                           \
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();                                        \
    for (int q = 0; q < kq; q++) {                                                                         \
      __m512bh bv[NV];                                                                                     \
      for (int v = 0; v < NV; v++)                                                                         \
        bv[v] = (__m512bh)_mm512_loadu_si512((const void *)(b + v * stripStride + (size_t)q * STRIP * 2)); \
      for (int r = 0; r < MR; r++) {                                                                       \
        uint32_t pair;                                                                                     \
        memcpy(&pair, rowsA[r] + 2 * q, sizeof pair);                                                      \
        const __m512bh a = (__m512bh)_mm512_set1_epi32((int)pair);                                         \
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, bv[v]);                    \
      }                                                                                                    \
    }                                                                                                      \
    for (int r = 0; r < mr; r++)                                                                           \
      for (int v = 0; v < NV; v++) {                                                                       \
        const int left = nc - v * STRIP;                                                                   \
        if (left <= 0) break;                                                                              \
        const __mmask16 m = left >= STRIP ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);            \
        float *cr = c + r * ldc + v * STRIP;                                                               \
        __m512 x = acc[r][v];                                                                              \
        if (add) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, cr));                                       \
        _mm512_mask_storeu_ps(cr, m, x);                                                                   \
      }                                                                                                    \
  }
KERNEL_BF16(1)
KERNEL_BF16(2)
KERNEL_BF16(3)
KERNEL_BF16(4)

typedef void KernelBf16(const uint16_t *const *rowsA, const uint16_t *b, size_t stripStride, int kq, float *c,
                        size_t ldc, int mr, int nc, int add);

/** Which part of a product is worth computing: all of it, or only what a triangle needs. */
typedef enum {
  DENSE,
  /** A is rows `diagonal` … of a strictly lower triangle: row i of A is zero from column
   *  diagonal + i on, so a panel reads only the pairs up to its last row. */
  A_STRICTLY_LOWER,
  /** Only the output on and above the diagonal is read (column j ≥ row i): a panel skips the
   *  strips left of its first row. */
  OUT_UPPER,
} Triangle;

typedef struct {
  const uint16_t *a;
  size_t rows, ld, pairs, n, strips;
  const uint16_t *packed; // strips stripStride values apart: A's pairs are a prefix of each
  size_t stripStride;
  float *out;
  Triangle triangle;
  size_t diagonal;
  /** Pairs per slice: KP, or GRAM_KP. */
  size_t slice;
} ProductBf16;

/** Pairs of A a panel's rows [row0, row0 + mr) need: all, or (A_STRICTLY_LOWER) those holding
 *  a column below the last row's diagonal — at least one, so that the first slice stores. */
static size_t panelPairs(const ProductBf16 *w, size_t row0, int mr) {
  if (w->triangle != A_STRICTLY_LOWER) return w->pairs;
  const size_t columns = w->diagonal + row0 + (size_t)mr - 1;
  const size_t pairs = (columns + 1) / 2;
  return pairs < 1 ? 1 : pairs < w->pairs ? pairs : w->pairs;
}

/** Row panels [panel0, panel1), as the float32 products go: blocks of NC_STRIPS strips
 *  outermost, then slices of `slice` pairs (a block's slice, ≤ 1 MiB, stays in L2 while every panel
 *  passes over it). */
static void productPanelsBf16(void *ctx, size_t panel0, size_t panel1, size_t part) {
  (void)part;
  const ProductBf16 *w = ctx;
  const size_t stripStride = w->stripStride;
  for (size_t s0 = 0; s0 < w->strips; s0 += NC_STRIPS) {
    const size_t s1 = minSize(w->strips, s0 + NC_STRIPS);
    for (size_t q0 = 0; q0 < w->pairs; q0 += w->slice) {
    for (size_t ip = panel0; ip < panel1; ip++) {
      const size_t row0 = ip * MR;
      const int mr = (int)minSize(w->rows - row0, MR);
      const size_t pairs = panelPairs(w, row0, mr);
      if (q0 >= pairs) continue;
      const int kq = (int)minSize(pairs - q0, w->slice);
      const uint16_t *rowsA[MR];
      for (int r = 0; r < MR; r++) rowsA[r] = w->a + (row0 + (size_t)(r < mr ? r : mr - 1)) * w->ld + 2 * q0;
      float *c = w->out + row0 * w->n;
      const size_t first = w->triangle == OUT_UPPER ? row0 / STRIP : 0;
      for (size_t s = s0 > first ? s0 : first; s < s1;) {
        const int nv = (int)minSize(s1 - s, 4);
        KernelBf16 *k = nv == 4 ? kernelBf16x4 : nv == 3 ? kernelBf16x3 : nv == 2 ? kernelBf16x2 : kernelBf16x1;
        const size_t col0 = s * STRIP, width = minSize(w->n - col0, (size_t)nv * STRIP);
        k(rowsA, w->packed + s * stripStride + q0 * STRIP * 2, stripStride, kq, c + col0, w->n, mr, (int)width,
          q0 > 0);
        s += (size_t)nv;
      }
    }
    }
  }
}
#endif

#ifdef LOFTQ_X86
typedef struct {
  const float *a;
  size_t cols, ld;
  uint16_t *out;
} RowsBf16;

/** Rows [first, last) of A (cols wide) as bf16 rows of ld values, the padding column zero. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void rowsToBf16(void *ctx, size_t first, size_t last,
                                                                             size_t part) {
  (void)part;
  const RowsBf16 *r = ctx;
  for (size_t i = first; i < last; i++) {
    const float *src = r->a + i * r->cols;
    uint16_t *dst = r->out + i * r->ld;
    for (size_t j = 0; j < r->cols; j += 16) {
      const size_t left = r->cols - j;
      const __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
      const __m512i v = _mm512_castsi256_si512((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + j)));
      _mm512_mask_storeu_epi16((void *)(dst + j), (__mmask32)m, v);
    }
    if (r->ld > r->cols) dst[r->cols] = 0;
  }
}

typedef struct {
  const void *const *wRows;
  /** W's rows are bf16 bit patterns already (a BF16 checkpoint's bytes), not float32. */
  int rowsBf16;
  size_t depth, n, pairs;
  uint16_t *packed;
} PackTransposedBf16;

/** Strips [s0, s1) of Wᵀ as bf16 pairs, read from W's rows: a column's pair (k, k+1) is two
 *  neighbours in its row of W, so the strip interleaves nothing. Rows given as bf16 are copied
 *  (toBf16 of their float32 widening is the same bits: every bf16 value is exact in float32). */
static void packStripsTransposedBf16(void *ctx, size_t s0, size_t s1, size_t part) {
  (void)part;
  const PackTransposedBf16 *k = ctx;
  for (size_t s = s0; s < s1; s++) {
    const size_t col0 = s * STRIP, width = minSize(k->n - col0, STRIP);
    uint16_t *dst = k->packed + s * k->pairs * STRIP * 2;
    for (size_t j = 0; j < STRIP; j++) {
      const void *row = j < width ? k->wRows[col0 + j] : NULL;
      for (size_t q = 0; q < k->pairs; q++) {
        const size_t p = 2 * q;
        uint16_t lo = 0, hi = 0;
        if (row && k->rowsBf16) {
          lo = ((const uint16_t *)row)[p];
          hi = p + 1 < k->depth ? ((const uint16_t *)row)[p + 1] : 0;
        } else if (row) {
          lo = toBf16(((const float *)row)[p]);
          hi = p + 1 < k->depth ? toBf16(((const float *)row)[p + 1]) : 0;
        }
        dst[q * STRIP * 2 + 2 * j] = lo;
        dst[q * STRIP * 2 + 2 * j + 1] = hi;
      }
    }
  }
}

typedef struct {
  uint16_t *a, *packed;
  size_t ld, pairs, aCapacity, packedCapacity;
} Bf16Operands;

static void giveOperands(Bf16Operands *o) {
  giveBuffer(o->a, o->aCapacity);
  giveBuffer(o->packed, o->packedCapacity);
}

/** A product's operands from the cache: A (rows × cols float32) converted to bf16 rows, and
 *  room for B packed as `strips` strips of cols' pairs. 0, or -1 (nothing held) when memory
 *  ran out. */
static int takeOperands(const float *a, size_t rows, size_t cols, size_t strips, int threads, Bf16Operands *o) {
  o->ld = bf16Stride(cols);
  o->pairs = o->ld / 2;
  o->a = takeBuffer(rows * o->ld * sizeof(uint16_t), &o->aCapacity);
  o->packed = takeBuffer(strips * o->pairs * STRIP * 2 * sizeof(uint16_t), &o->packedCapacity);
  if (!o->a || !o->packed) {
    giveOperands(o);
    return -1;
  }
  RowsBf16 conv = {a, cols, o->ld, o->a};
  parallelFor(rows, 16, threads, rowsToBf16, &conv);
  return 0;
}
#endif

int gramChunkBf16(const float *x, const float *xt, size_t dim, size_t n, const size_t *bandStarts, size_t bands,
                  float *prod, GramBand *onBand, void *ctx, int threads) {
#ifdef LOFTQ_X86
  const size_t strips = (dim + STRIP - 1) / STRIP;
  Bf16Operands o;
  if (takeOperands(xt, dim, n, strips, threads, &o)) return -1;
  const size_t ld = o.ld, pairs = o.pairs;
  PackBf16 pack = {x, n, dim, pairs, o.packed};
  parallelFor(strips, 1, threads, packStripsBf16Avx512, &pack);
  for (size_t b = 0; b < bands; b++) {
    const size_t r0 = bandStarts[b], r1 = bandStarts[b + 1], w = dim - r0;
    if (r1 == r0) continue;
    // Band rows r0 … r1 of Xᵀ times X's strips from column r0 on (r0 is a whole strip).
    // Only the upper triangle is summed (addGramBand): each panel starts at its diagonal's strip.
    ProductBf16 work = {o.a + r0 * ld, r1 - r0, ld, pairs, w, (w + STRIP - 1) / STRIP,
                        o.packed + r0 / STRIP * pairs * STRIP * 2, pairs * STRIP * 2, prod, OUT_UPPER, 0, GRAM_KP};
    parallelFor((r1 - r0 + MR - 1) / MR, 1, threads, productPanelsBf16, &work);
    onBand(ctx, r0, r1, w);
  }
  giveOperands(&o);
  return 0;
#else
  (void)x, (void)xt, (void)dim, (void)n, (void)bandStarts, (void)bands, (void)prod, (void)onBand, (void)ctx,
      (void)threads;
  return -2;
#endif
}

int multiplyTransposedBf16(const float *a, size_t rows, size_t cols, const void *const *wRows, int rowsBf16, size_t n,
                           float *out, int threads) {
  if (rows == 0 || n == 0) return 0;
  if (!bf16Supported()) return -2;
  if (cols == 0) {
    memset(out, 0, rows * n * sizeof(float));
    return 0;
  }
#ifdef LOFTQ_X86
  const size_t strips = (n + STRIP - 1) / STRIP;
  Bf16Operands o;
  if (takeOperands(a, rows, cols, strips, threads, &o)) return -1;
  PackTransposedBf16 pack = {wRows, rowsBf16, cols, n, o.pairs, o.packed};
  parallelFor(strips, 1, threads, packStripsTransposedBf16, &pack);
  ProductBf16 work = {o.a, rows, o.ld, o.pairs, n, strips, o.packed, o.pairs * STRIP * 2, out, DENSE, 0, KP};
  parallelFor((rows + MR - 1) / MR, 1, threads, productPanelsBf16, &work);
  giveOperands(&o);
  return 0;
#else
  (void)a, (void)wRows, (void)rowsBf16, (void)out, (void)threads;
  return -2;
#endif
}

#ifdef LOFTQ_X86
typedef struct {
  const float *b, *out;
  const double *w;
  size_t r0, n;
  double *rowSums;
} RowMeasure;

/** Σ_c b_ic·(2·p_ic + w_i·b_ic) of rows [first, last) of a band's product p, each row's sum
 *  kept apart so that the total is added in row order whatever the threads. A row is summed
 *  in eight float64 lanes, then the lanes in order: a fixed order, as fast as the loads (one
 *  running sum waits on its own additions). */
__attribute__((target("avx512f"))) static void measureRows(void *ctx, size_t first, size_t last, size_t part) {
  (void)part;
  const RowMeasure *m = ctx;
  const __m512d two = _mm512_set1_pd(2.0);
  for (size_t i = first; i < last; i++) {
    const float *bi = m->b + (m->r0 + i) * m->n, *pi = m->out + i * m->n;
    const double wi = m->w[m->r0 + i];
    const __m512d w8 = _mm512_set1_pd(wi);
    __m512d lanes = _mm512_setzero_pd();
    size_t c = 0;
    for (; c + 8 <= m->n; c += 8) {
      const __m512d bc = _mm512_cvtps_pd(_mm256_loadu_ps(bi + c)), pc = _mm512_cvtps_pd(_mm256_loadu_ps(pi + c));
      const __m512d inner = _mm512_add_pd(_mm512_mul_pd(two, pc), _mm512_mul_pd(w8, bc));
      lanes = _mm512_add_pd(lanes, _mm512_mul_pd(bc, inner));
    }
    double part8[8], sum = 0;
    _mm512_storeu_pd(part8, lanes);
    for (int l = 0; l < 8; l++) sum += part8[l];
    for (; c < m->n; c++) sum += (double)bi[c] * (2.0 * (double)pi[c] + wi * (double)bi[c]);
    m->rowSums[i] = sum;
  }
}
#endif

int measureBf16(const uint16_t *const *a, const size_t *rows, const size_t *cols, size_t bands, const float *b,
                size_t dim, size_t n, const double *w, int threads, double *total) {
  *total = 0;
  if (dim == 0 || n == 0) return 0;
  if (!bf16Supported()) return -2;
#ifdef LOFTQ_X86
  const size_t strips = (n + STRIP - 1) / STRIP, pairs = bf16Stride(dim) / 2;
  size_t maxRows = 0;
  for (size_t k = 0; k < bands; k++) maxRows = rows[k] > maxRows ? rows[k] : maxRows;
  size_t packedCapacity, outCapacity, sumsCapacity;
  uint16_t *packed = takeBuffer(strips * pairs * STRIP * 2 * sizeof(uint16_t), &packedCapacity);
  float *out = takeBuffer((maxRows ? maxRows : 1) * n * sizeof(float), &outCapacity);
  double *rowSums = takeBuffer((maxRows ? maxRows : 1) * sizeof(double), &sumsCapacity);
  if (!packed || !out || !rowSums) {
    giveBuffer(packed, packedCapacity);
    giveBuffer(out, outCapacity);
    giveBuffer(rowSums, sumsCapacity);
    return -1;
  }
  // B packed once, all dim rows: band k reads the first bf16Stride(cols[k]) / 2 pairs of
  // each strip (its columns [0, cols[k]); its padding column is zero in A).
  PackBf16 pack = {b, dim, n, pairs, packed};
  parallelFor(strips, 1, threads, packStripsBf16Avx512, &pack);
  for (size_t k = 0; k < bands; k++) {
    if (rows[k] == 0) continue;
    const size_t ld = bf16Stride(cols[k]);
    // The band's rows of the strict lower triangle: each panel stops at its own diagonal.
    ProductBf16 work = {a[k], rows[k], ld, ld / 2, n, strips, packed, pairs * STRIP * 2, out, A_STRICTLY_LOWER,
                        cols[k] - rows[k], KP};
    parallelFor((rows[k] + MR - 1) / MR, 1, threads, productPanelsBf16, &work);
    RowMeasure m = {b, out, w, cols[k] - rows[k], n, rowSums};
    parallelFor(rows[k], 16, threads, measureRows, &m);
    for (size_t i = 0; i < rows[k]; i++) *total += rowSums[i];
  }
  giveBuffer(packed, packedCapacity);
  giveBuffer(out, outCapacity);
  giveBuffer(rowSums, sumsCapacity);
  return 0;
#else
  (void)a, (void)rows, (void)cols, (void)bands, (void)b, (void)w, (void)threads;
  return -2;
#endif
}
