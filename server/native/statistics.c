// Float64 helpers of the calibration statistics: G's scale-and-mirror after XᵀX
// (model/collect.ts) and the float32 bands of its lower and upper triangles that a held metric
// multiplies by (loftq/heldMetric.ts).

#include "native.h"

static inline size_t minSize(size_t a, size_t b) { return a < b ? a : b; }

typedef struct {
  const double *g;
  size_t dim, r0, r1, c0, c1;
  int upper;
  float *out;
} Band;

// Rows [first, last) of the band (relative), each read along G's row: the upper triangle of a
// symmetric G is its lower one transposed without the strided column walk.
static void bandRows(void *ctx, size_t first, size_t last, size_t part) {
  (void)part;
  const Band *b = ctx;
  const size_t w = b->c1 - b->c0;
  for (size_t k = first; k < last; k++) {
    const size_t i = b->r0 + k;
    const double *row = b->g + i * b->dim;
    float *o = b->out + k * w - b->c0;
    if (b->upper)
      for (size_t j = b->c0; j < b->c1; j++) o[j] = j >= i ? (float)row[j] : 0.0f;
    else
      for (size_t j = b->c0; j < b->c1; j++) o[j] = j <= i ? (float)row[j] : 0.0f;
  }
}

void triangleBandToFloat32(const double *g, size_t dim, size_t r0, size_t r1, int upper, float *out, int threads) {
  // The band's nonzero columns: the lower triangle's row band reaches column r1 − 1; the upper's starts at r0.
  Band b = {g, dim, r0, r1, upper ? r0 : 0, upper ? dim : r1, upper, out};
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
