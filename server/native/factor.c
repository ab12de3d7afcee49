// The float64 factorizations of calibrated LoftQ (server/src/loftq/calibrationFactor.ts):
// the Cholesky factor L of G + λI and the adapter solve A = M·L⁻¹. The WebAssembly kernel
// factors row by row with dot products (~4 GFLOP/s: 14 s for a 5632-wide down_proj input,
// per layer); here the factorization is blocked so that almost all of its n³/3 multiply-adds
// are one product per block column — the trailing update A₂₂ −= P·Pᵀ of the panel P below
// the diagonal block — run by a register-tiled kernel on every thread.
//
// Block step (NB columns [k0, k1)): factor the diagonal block (unblocked), solve the panel
// rows against it (x·L₁₁ᵀ = b, one row at a time), update the trailing lower triangle. The
// trailing kernel also writes a few entries above the diagonal (a tile's right edge); the
// upper triangle is never read and is zeroed at the end.

#include <math.h>
#include <string.h>
#include "native.h"

enum { NB = 128, DSTRIP = 8, DMR = 6 };

static inline size_t minSize(size_t a, size_t b) { return a < b ? a : b; }

/** Unblocked factor of the diagonal block [k0, k1): −1 or the failing row. */
static long factorDiagonal(double *a, size_t n, size_t k0, size_t k1) {
  for (size_t i = k0; i < k1; i++) {
    double *ri = a + i * n;
    for (size_t j = k0; j <= i; j++) {
      const double *rj = a + j * n;
      double s = ri[j];
      for (size_t p = k0; p < j; p++) s -= ri[p] * rj[p];
      if (j < i) {
        ri[j] = s / rj[j];
      } else {
        ri[i] = s > 0 ? sqrt(s) : s;
        if (!(s > 0)) return (long)i;
      }
    }
  }
  return -1;
}

typedef struct {
  double *a;
  size_t n, k0, k1;
  /** The diagonal block's columns as rows: lt[j·nb + q] = L[k0 + q][k0 + j]. */
  const double *lt;
} Panel;

// Each panel row solves x·L₁₁ᵀ = b by columns (axpys on contiguous rows of lt), compiled for
// each instruction set so the compiler vectorizes the axpy as wide as the CPU allows.
#define PANEL_ROWS(NAME, ATTR)                                                 \
  ATTR static void NAME(void *ctx, size_t first, size_t last, size_t part) {  \
    (void)part;                                                                \
    const Panel *w = ctx;                                                      \
    const size_t nb = w->k1 - w->k0;                                           \
    for (size_t i = first; i < last; i++) {                                    \
      double *x = w->a + (w->k1 + i) * w->n + w->k0;                           \
      for (size_t j = 0; j < nb; j++) {                                        \
        const double *lj = w->lt + j * nb;                                     \
        const double v = (x[j] /= lj[j]);                                      \
        for (size_t q = j + 1; q < nb; q++) x[q] -= v * lj[q];                 \
      }                                                                        \
    }                                                                          \
  }
PANEL_ROWS(panelRowsGeneric, )
#ifdef LOFTQ_X86
PANEL_ROWS(panelRowsAvx2, __attribute__((target("avx2,fma"))))
PANEL_ROWS(panelRowsAvx512, __attribute__((target("avx512f"))))
#endif

/** c[r][0 … nc) −= Σ_p rows[r][p] · strips[p][…] for a DMR-row tile: `b` holds `kc` rows of
 *  consecutive DSTRIP-wide strips, `stripStride` doubles apart. */
typedef void SyrkKernel(const double *const *rows, const double *b, size_t stripStride, int kc, double *c,
                        size_t ldc, int mr, int nc);

static void syrkGeneric(const double *const *rows, const double *b, size_t stripStride, int kc, double *c,
                        size_t ldc, int mr, int nc) {
  (void)stripStride;
  double acc[DMR][DSTRIP] = {{0}};
  for (int p = 0; p < kc; p++)
    for (int r = 0; r < DMR; r++) {
      const double x = rows[r][p];
      for (int j = 0; j < DSTRIP; j++) acc[r][j] += x * b[(size_t)p * DSTRIP + j];
    }
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < nc && j < DSTRIP; j++) c[r * ldc + j] -= acc[r][j];
}

#ifdef LOFTQ_X86
__attribute__((target("avx2,fma"))) static void syrkAvx2(const double *const *rows, const double *b,
                                                          size_t stripStride, int kc, double *c, size_t ldc,
                                                          int mr, int nc) {
  (void)stripStride;
  __m256d acc[DMR][2];
  for (int r = 0; r < DMR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_pd();
  for (int p = 0; p < kc; p++) {
    const __m256d b0 = _mm256_loadu_pd(b + (size_t)p * DSTRIP), b1 = _mm256_loadu_pd(b + (size_t)p * DSTRIP + 4);
    for (int r = 0; r < DMR; r++) {
      const __m256d x = _mm256_broadcast_sd(rows[r] + p);
      acc[r][0] = _mm256_fmadd_pd(x, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_pd(x, b1, acc[r][1]);
    }
  }
  double tile[DSTRIP];
  for (int r = 0; r < mr; r++) {
    _mm256_storeu_pd(tile, acc[r][0]);
    _mm256_storeu_pd(tile + 4, acc[r][1]);
    for (int j = 0; j < nc && j < DSTRIP; j++) c[r * ldc + j] -= tile[j];
  }
}

// NV strips per call: DMR × NV accumulators (18 of the 32 registers at NV = 3).
#define SYRK_AVX512(NV)                                                                                  \
  __attribute__((target("avx512f"))) static void syrkAvx512x##NV(const double *const *rows, const double *b, \
                                                                  size_t stripStride, int kc, double *c,    \
                                                                  size_t ldc, int mr, int nc) {             \
    __m512d acc[DMR][NV];                                                                                \
    for (int r = 0; r < DMR; r++)                                                                        \
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_pd();                                     \
    for (int p = 0; p < kc; p++) {                                                                       \
      __m512d bv[NV];                                                                                    \
      for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_pd(b + v * stripStride + (size_t)p * DSTRIP);    \
      for (int r = 0; r < DMR; r++) {                                                                    \
        const __m512d x = _mm512_set1_pd(rows[r][p]);                                                    \
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_pd(x, bv[v], acc[r][v]);                   \
      }                                                                                                  \
    }                                                                                                    \
    for (int r = 0; r < mr; r++)                                                                         \
      for (int v = 0; v < NV; v++) {                                                                     \
        const int left = nc - v * DSTRIP;                                                                \
        if (left <= 0) break;                                                                            \
        const __mmask8 m = left >= DSTRIP ? (__mmask8)0xff : (__mmask8)((1u << left) - 1);              \
        double *cr = c + r * ldc + v * DSTRIP;                                                           \
        _mm512_mask_storeu_pd(cr, m, _mm512_sub_pd(_mm512_maskz_loadu_pd(m, cr), acc[r][v]));           \
      }                                                                                                  \
  }
SYRK_AVX512(1)
SYRK_AVX512(2)
SYRK_AVX512(3)
#endif

typedef struct {
  double *a;
  size_t n, k0, k1;
  /** The panel's rows packed as DSTRIP-wide strips of its transpose: strip s holds
   *  pt[s][p][j] = P[s·DSTRIP + j][p] (zero past the last row), nb × DSTRIP each. */
  const double *pt;
  size_t parts;
  Isa isa;
} Trailing;

/** Row tiles part, part + parts, …: the triangle's rows grow longer, so every part gets
 *  short and long ones alike. */
static void trailingPart(void *ctx, size_t first, size_t last, size_t part) {
  (void)first;
  (void)last;
  const Trailing *w = ctx;
  const size_t n = w->n, k0 = w->k0, k1 = w->k1, nb = k1 - k0, m = n - k1, stripStride = nb * DSTRIP;
  const size_t tiles = (m + DMR - 1) / DMR;
  for (size_t t = part; t < tiles; t += w->parts) {
    const size_t r0 = t * DMR;
    const int mr = (int)minSize(DMR, m - r0);
    const double *rows[DMR];
    // Rows past the end repeat the last one: computed, never stored.
    for (int r = 0; r < DMR; r++) rows[r] = w->a + (k1 + r0 + (size_t)(r < mr ? r : mr - 1)) * n + k0;
    double *c = w->a + (k1 + r0) * n + k1;
    // Columns up to the tile's last row reach every diagonal entry of the tile.
    const size_t cols = r0 + (size_t)mr, strips = (cols + DSTRIP - 1) / DSTRIP;
    for (size_t s = 0; s < strips;) {
      int nv = 1;
      SyrkKernel *k = syrkGeneric;
#ifdef LOFTQ_X86
      if (w->isa == ISA_AVX512) {
        nv = (int)minSize(3, strips - s);
        k = nv == 3 ? syrkAvx512x3 : nv == 2 ? syrkAvx512x2 : syrkAvx512x1;
      } else if (w->isa == ISA_AVX2) {
        k = syrkAvx2;
      }
#endif
      const int width = (int)minSize(cols - s * DSTRIP, (size_t)nv * DSTRIP);
      k(rows, w->pt + s * stripStride, stripStride, (int)nb, c + s * DSTRIP, n, mr, width);
      s += (size_t)nv;
    }
  }
}

long choleskyLower(double *a, size_t n, double shift, int threads, Isa isa) {
  for (size_t i = 0; i < n; i++) a[i * n + i] += shift;
  size_t ltCapacity = 0, ptCapacity = 0;
  double *lt = takeBuffer(NB * NB * sizeof(double), &ltCapacity);
  double *pt = takeBuffer(((n + DSTRIP - 1) / DSTRIP) * DSTRIP * NB * sizeof(double), &ptCapacity);
  long bad = -2; // out of memory
  if (lt && pt) {
    bad = -1;
    RangeFn *panelRows = panelRowsGeneric;
#ifdef LOFTQ_X86
    if (isa == ISA_AVX512) panelRows = panelRowsAvx512;
    else if (isa == ISA_AVX2) panelRows = panelRowsAvx2;
#endif
    for (size_t k0 = 0; k0 < n && bad == -1; k0 += NB) {
      const size_t k1 = minSize(n, k0 + NB), nb = k1 - k0, m = n - k1;
      bad = factorDiagonal(a, n, k0, k1);
      if (bad != -1 || m == 0) break;
      for (size_t j = 0; j < nb; j++)
        for (size_t q = j; q < nb; q++) lt[j * nb + q] = a[(k0 + q) * n + k0 + j];
      Panel panel = {a, n, k0, k1, lt};
      parallelFor(m, 8, threads, panelRows, &panel);
      const size_t strips = (m + DSTRIP - 1) / DSTRIP;
      for (size_t s = 0; s < strips; s++)
        for (size_t j = 0; j < DSTRIP; j++) {
          const size_t row = s * DSTRIP + j;
          double *dst = pt + s * nb * DSTRIP + j;
          if (row < m)
            for (size_t p = 0; p < nb; p++) dst[p * DSTRIP] = a[(k1 + row) * n + k0 + p];
          else
            for (size_t p = 0; p < nb; p++) dst[p * DSTRIP] = 0;
        }
      const size_t parts = (size_t)(threads < 1 ? 1 : threads);
      Trailing trailing = {a, n, k0, k1, pt, parts, isa};
      parallelFor(parts, 1, (int)parts, trailingPart, &trailing);
    }
  }
  giveBuffer(lt, ltCapacity);
  giveBuffer(pt, ptCapacity);
  if (bad == -1)
    for (size_t i = 0; i + 1 < n; i++) memset(a + i * n + i + 1, 0, (n - i - 1) * sizeof(double));
  return bad;
}

typedef struct {
  double *m;
  size_t r, n;
  const double *l;
} Solve;

// Back substitution, last column first: once a_i is known, a_i·L[i, :i] leaves the
// right-hand side (row i of L is contiguous). Each part takes its own rows of m and reads L
// once for all of them.
#define SOLVE_ROWS(NAME, ATTR)                                                   \
  ATTR static void NAME(void *ctx, size_t first, size_t last, size_t part) {    \
    (void)part;                                                                  \
    const Solve *w = ctx;                                                        \
    const size_t n = w->n;                                                       \
    for (size_t i = n; i-- > 0;) {                                               \
      const double *li = w->l + i * n;                                           \
      for (size_t p = first; p < last; p++) {                                    \
        double *ap = w->m + p * n;                                               \
        const double v = (ap[i] /= li[i]);                                       \
        if (v != 0)                                                              \
          for (size_t j = 0; j < i; j++) ap[j] -= v * li[j];                     \
      }                                                                          \
    }                                                                            \
  }
SOLVE_ROWS(solveRowsGeneric, )
#ifdef LOFTQ_X86
SOLVE_ROWS(solveRowsAvx2, __attribute__((target("avx2,fma"))))
SOLVE_ROWS(solveRowsAvx512, __attribute__((target("avx512f"))))
#endif

void solveRightLower(double *m, size_t r, const double *l, size_t n, int threads, Isa isa) {
  RangeFn *rows = solveRowsGeneric;
#ifdef LOFTQ_X86
  if (isa == ISA_AVX512) rows = solveRowsAvx512;
  else if (isa == ISA_AVX2) rows = solveRowsAvx2;
#endif
  Solve s = {m, r, n, l};
  parallelFor(r, 1, threads, rows, &s);
}

typedef struct {
  const double *l;
  size_t dim, r0, r1, c0, c1;
  int transpose;
  float *out;
} Band;

// Rows [first, last) of the band (relative), in 64-wide column tiles: the transposed read
// walks down L's columns, one cache line of each of 64 rows per tile.
static void bandRows(void *ctx, size_t first, size_t last, size_t part) {
  (void)part;
  const Band *b = ctx;
  const size_t w = b->c1 - b->c0;
  for (size_t j0 = b->c0; j0 < b->c1; j0 += 64) {
    const size_t j1 = minSize(b->c1, j0 + 64);
    for (size_t k = first; k < last; k++) {
      const size_t i = b->r0 + k;
      float *o = b->out + k * w - b->c0;
      if (b->transpose)
        for (size_t j = j0; j < j1; j++) o[j] = j >= i ? (float)b->l[j * b->dim + i] : 0.0f;
      else
        for (size_t j = j0; j < j1; j++) o[j] = j <= i ? (float)b->l[i * b->dim + j] : 0.0f;
    }
  }
}

void lowerBandToFloat32(const double *l, size_t dim, size_t r0, size_t r1, int transpose, float *out, int threads) {
  // The band's nonzero columns: L's row band reaches column r1 − 1; Lᵀ's starts at r0.
  Band b = {l, dim, r0, r1, transpose ? r0 : 0, transpose ? dim : r1, transpose, out};
  parallelFor(r1 - r0, 16, threads, bandRows, &b);
}

typedef struct {
  double *g;
  size_t dim, parts;
  double scale;
} Symmetrize;

enum { SYM_TILE = 32 };

// Row tiles part, part + parts, …: a tile scales its rows on and right of the diagonal and
// writes their mirror into its own columns below it, so parts never write the same entry.
static void symmetrizePart(void *ctx, size_t first, size_t last, size_t part) {
  (void)first;
  (void)last;
  const Symmetrize *w = ctx;
  const size_t dim = w->dim, tiles = (dim + SYM_TILE - 1) / SYM_TILE;
  double *g = w->g;
  for (size_t t = part; t < tiles; t += w->parts) {
    const size_t i0 = t * SYM_TILE, i1 = minSize(dim, i0 + SYM_TILE);
    for (size_t j0 = i0; j0 < dim; j0 += SYM_TILE) {
      const size_t j1 = minSize(dim, j0 + SYM_TILE);
      for (size_t i = i0; i < i1; i++)
        for (size_t j = j0 > i ? j0 : i; j < j1; j++) g[j * dim + i] = g[i * dim + j] = g[i * dim + j] * w->scale;
    }
  }
}

void symmetrizeScaled(double *g, size_t dim, double scale, int threads) {
  const size_t parts = (size_t)(threads < 1 ? 1 : threads);
  Symmetrize s = {g, dim, parts, scale};
  parallelFor(parts, 1, (int)parts, symmetrizePart, &s);
}
