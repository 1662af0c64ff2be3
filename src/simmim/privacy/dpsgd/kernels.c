/* The DP engine's compiled kernels: ghost norms of Linear layers, and per-example LayerNorm gradients.
 *
 * Ghost norms of Linear layers, fused: for each unit n,
 *
 *     out[n] = sum_{t,s} (a_t . b_s + bias) (g_t . h_s)
 *
 * with a (N, Ta, din), b (N, Tb, din), g (N, Ta, dout), h (N, Tb, dout), all float32 and
 * row-major contiguous. With b == a and h == g (one call of the layer, `same` = 1) both Gram
 * matrices are symmetric and only their upper triangles are formed: half the multiply-adds.
 *
 * Why not torch.bmm: the Gram matrices here are tiny (16-70 tokens a side, more for a unit of
 * several examples) and BLAS runs such batched products at about half its large-product rate.
 * Here no Gram matrix is ever stored. Token pairs are taken in blocks of 4 x 4: a block's 16 input
 * dot products and 16 output-gradient dot products are formed in registers (16-float vectors
 * along the width), their lanes summed by a transposing add tree rather than vector by vector,
 * and the block's products added to a running vector. Measured against the previous kernel (both
 * Gram matrices of a unit in scratch memory, 4 x 2 blocks, one lane sum per dot product), on 256
 * units of 16-34 tokens it takes 0.6-0.9x the time with the data in cache and 0.75-0.9x streamed
 * from memory; on units of 65-197 tokens 0.6-0.8x either way.
 *
 * Vectors are GCC vector extensions of 16 floats: AVX-512 where the machine has it, pairs of
 * AVX2 registers or SSE elsewhere. Units are shared out over OpenMP threads; loaded after
 * torch, the library uses torch's own OpenMP runtime and thread count.
 */
#include <omp.h>
#include <stddef.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));

static inline v16 load16(const float* p) {
    v16 v;
    memcpy(&v, p, sizeof v); /* an unaligned load */
    return v;
}

/* The lanes of eight vectors summed, as the eight lanes of one: each fold adds the halves of two
 * vectors side by side, so three folds and a last add of neighbouring lanes replace eight separate
 * lane sums. */
static inline v16 fold1(v16 x, v16 y) {
    return __builtin_shufflevector(x, y, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           __builtin_shufflevector(x, y, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
}
static inline v16 fold2(v16 x, v16 y) {
    return __builtin_shufflevector(x, y, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
           __builtin_shufflevector(x, y, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
}
static inline v16 fold3(v16 x, v16 y) {
    return __builtin_shufflevector(x, y, 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
           __builtin_shufflevector(x, y, 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
}
static inline v8 lane_sums(v16 c0, v16 c1, v16 c2, v16 c3, v16 c4, v16 c5, v16 c6, v16 c7) {
    const v16 s = fold3(fold2(fold1(c0, c1), fold1(c2, c3)), fold2(fold1(c4, c5), fold1(c6, c7)));
    return __builtin_shufflevector(s, s, 0, 2, 4, 6, 8, 10, 12, 14) +
           __builtin_shufflevector(s, s, 1, 3, 5, 7, 9, 11, 13, 15);
}

static inline float sum8(v8 v) {
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

/* The products past the last whole vector of a row (none when d is a multiple of 16). */
static inline float tail(const float* x, const float* y, int full, int d) {
    float s = 0.f;
    for (int k = full; k < d; k++) s += x[k] * y[k];
    return s;
}

/* The 16 dot products of rows x0..x3 with rows y0..y3 (d floats each): x_r . y_c in lane 4r + c,
 * rows 0-1 in `top`, rows 2-3 in `bottom`. Sixteen accumulators and eight loads per step of the
 * width: with AVX-512 all in registers. */
static inline void block_dots(const float* x0, const float* x1, const float* x2, const float* x3,
                              const float* y0, const float* y1, const float* y2, const float* y3, int d,
                              v8* top, v8* bottom) {
    const int full = d - d % 16;
    v16 c[4][4] = {{{0}}};
    for (int k = 0; k < full; k += 16) {
        const v16 u0 = load16(y0 + k), u1 = load16(y1 + k), u2 = load16(y2 + k), u3 = load16(y3 + k);
        const v16 v[4] = {load16(x0 + k), load16(x1 + k), load16(x2 + k), load16(x3 + k)};
        for (int r = 0; r < 4; r++) {
            c[r][0] += v[r] * u0;
            c[r][1] += v[r] * u1;
            c[r][2] += v[r] * u2;
            c[r][3] += v[r] * u3;
        }
    }
    *top = lane_sums(c[0][0], c[0][1], c[0][2], c[0][3], c[1][0], c[1][1], c[1][2], c[1][3]);
    *bottom = lane_sums(c[2][0], c[2][1], c[2][2], c[2][3], c[3][0], c[3][1], c[3][2], c[3][3]);
    if (full != d) {
        const float* x[4] = {x0, x1, x2, x3};
        const float* y[4] = {y0, y1, y2, y3};
        for (int r = 0; r < 4; r++)
            for (int col = 0; col < 4; col++) {
                const float p = tail(x[r], y[col], full, d);
                if (r < 2) (*top)[4 * r + col] += p; else (*bottom)[4 * (r - 2) + col] += p;
            }
    }
}

/* The dot products of rows x0..x3 with rows y0, y1, as lane 2r + c. */
static inline v8 narrow_block_dots(const float* x0, const float* x1, const float* x2, const float* x3,
                                   const float* y0, const float* y1, int d) {
    const int full = d - d % 16;
    v16 c[4][2] = {{{0}}};
    for (int k = 0; k < full; k += 16) {
        const v16 u0 = load16(y0 + k), u1 = load16(y1 + k);
        const v16 v[4] = {load16(x0 + k), load16(x1 + k), load16(x2 + k), load16(x3 + k)};
        for (int r = 0; r < 4; r++) {
            c[r][0] += v[r] * u0;
            c[r][1] += v[r] * u1;
        }
    }
    v8 out = lane_sums(c[0][0], c[0][1], c[1][0], c[1][1], c[2][0], c[2][1], c[3][0], c[3][1]);
    if (full != d) {
        const float* x[4] = {x0, x1, x2, x3};
        for (int r = 0; r < 4; r++) {
            out[2 * r] += tail(x[r], y0, full, d);
            out[2 * r + 1] += tail(x[r], y1, full, d);
        }
    }
    return out;
}

static inline float dot(const float* x, const float* y, int d) {
    const int full = d - d % 16;
    v16 acc = {0};
    for (int k = 0; k < full; k += 16) acc += load16(x + k) * load16(y + k);
    const v8 half = __builtin_shufflevector(acc, acc, 0, 1, 2, 3, 4, 5, 6, 7) +
                    __builtin_shufflevector(acc, acc, 8, 9, 10, 11, 12, 13, 14, 15);
    return sum8(half) + tail(x, y, full, d);
}

/* With `same`, a block whose first column is its first row: pairs on the diagonal count once, those
 * above it twice, those below not at all (lane 4r + c, rows 0-1 and rows 2-3). */
static const v8 DIAGONAL_TOP = {1, 2, 2, 2, 0, 1, 2, 2};
static const v8 DIAGONAL_BOTTOM = {0, 0, 1, 2, 0, 0, 0, 1};

static float unit_norm(const float* a, const float* b, const float* g, const float* h, int Ta, int Tb, int din,
                       int dout, float bias, int same) {
    const float off = same ? 2.f : 1.f; /* the weight of a pair off the diagonal */
    v8 total = {0};
    int t = 0;
    for (; t + 4 <= Ta; t += 4) {
        const float *a0 = a + (size_t)t * din, *a1 = a0 + din, *a2 = a1 + din, *a3 = a2 + din;
        const float *g0 = g + (size_t)t * dout, *g1 = g0 + dout, *g2 = g1 + dout, *g3 = g2 + dout;
        int s = same ? t : 0;
        for (; s + 4 <= Tb; s += 4) {
            const float *b0 = b + (size_t)s * din, *h0 = h + (size_t)s * dout;
            v8 at, ab, gt, gb;
            block_dots(a0, a1, a2, a3, b0, b0 + din, b0 + 2 * din, b0 + 3 * din, din, &at, &ab);
            block_dots(g0, g1, g2, g3, h0, h0 + dout, h0 + 2 * dout, h0 + 3 * dout, dout, &gt, &gb);
            const v8 top = (at + bias) * gt, bottom = (ab + bias) * gb;
            if (same && s == t)
                total += top * DIAGONAL_TOP + bottom * DIAGONAL_BOTTOM;
            else
                total += off * (top + bottom);
        }
        /* The last one to three columns, two at a time; a lone last column is paired with itself,
         * its copy weighing nothing. */
        for (; s < Tb; s += 2) {
            const int lone = s + 1 == Tb;
            const float *b0 = b + (size_t)s * din, *h0 = h + (size_t)s * dout;
            const v8 term = (narrow_block_dots(a0, a1, a2, a3, b0, lone ? b0 : b0 + din, din) + bias) *
                            narrow_block_dots(g0, g1, g2, g3, h0, lone ? h0 : h0 + dout, dout);
            const v8 both = {1, 1, 1, 1, 1, 1, 1, 1}, first = {1, 0, 1, 0, 1, 0, 1, 0};
            total += off * term * (lone ? first : both);
        }
    }
    /* The last one to three rows, pair by pair. */
    float rest = 0.f;
    for (; t < Ta; t++)
        for (int s = same ? t : 0; s < Tb; s++)
            rest += (same && s > t ? 2.f : 1.f) * (dot(a + (size_t)t * din, b + (size_t)s * din, din) + bias) *
                    dot(g + (size_t)t * dout, h + (size_t)s * dout, dout);
    return sum8(total) + rest;
}

void ghost_norms(const float* a, const float* b, const float* g, const float* h, int n_units, int Ta, int Tb,
                 int din, int dout, float bias, int same, int threads, float* out) {
    /* Loaded after torch, this is torch's OpenMP runtime, already set to torch's thread count: a
     * num_threads clause on every call measured slower than setting the count once. */
    if (omp_get_max_threads() != threads) omp_set_num_threads(threads);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < n_units; n++)
        out[n] = unit_norm(a + (size_t)n * Ta * din, b + (size_t)n * Tb * din, g + (size_t)n * Ta * dout,
                           h + (size_t)n * Tb * dout, Ta, Tb, din, dout, bias, same);
}

/* Per-example LayerNorm gradients in one pass over the layer's input and output gradient: for each
 * example n and feature j,
 *
 *     weight[n, j] = sum_t g[n, t, j] (x[n, t, j] - mean[n, t]) rstd[n, t],    bias[n, j] = sum_t g[n, t, j]
 *
 * with x and g (N, T, d), mean and rstd (N, T) (what autograd keeps), all float32 and contiguous.
 * torch needs four passes and a temporary of x's size for the same (x_hat, times g, sum, sum). */
void layer_norm_grads(const float* x, const float* mean, const float* rstd, const float* g, int n_examples, int T,
                      int d, int threads, float* weight, float* bias) {
    if (omp_get_max_threads() != threads) omp_set_num_threads(threads);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < n_examples; n++) {
        float* w = weight + (size_t)n * d;
        float* b = bias + (size_t)n * d;
        for (int j = 0; j < d; j++) w[j] = b[j] = 0.f;
        for (int t = 0; t < T; t++) {
            const size_t row = (size_t)n * T + t;
            const float *xr = x + row * d, *gr = g + row * d;
            const float m = mean[row], r = rstd[row];
            for (int j = 0; j < d; j++) {
                w[j] += gr[j] * ((xr[j] - m) * r);
                b[j] += gr[j];
            }
        }
    }
}
