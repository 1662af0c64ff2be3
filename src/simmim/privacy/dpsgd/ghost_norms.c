/* Ghost norms of Linear layers, fused: for each unit n,
 *
 *     out[n] = sum_{t,s} (a_t . b_s + bias) (g_t . h_s)
 *
 * with a (N, Ta, din), b (N, Tb, din), g (N, Ta, dout), h (N, Tb, dout), all float32 and
 * row-major contiguous. With b == a and h == g (one call of the layer, `same` = 1) both Gram
 * matrices are symmetric and only their upper triangles are formed: half the multiply-adds.
 *
 * Why not torch.bmm: the Gram matrices here are tiny (16-70 tokens a side) and BLAS runs such
 * batched products at about half its large-product rate; forming both Grams of one unit in
 * registers and cache, and reducing them at once, measured 1.5-2x faster on the demo model's
 * shapes (256 units, 16-23 tokens, widths 64-192), and about 8% off its whole DP step.
 *
 * Vectors are GCC vector extensions of 16 floats: AVX-512 where the machine has it, pairs of
 * AVX2 registers or SSE elsewhere. Units are shared out over OpenMP threads; loaded after
 * torch, the library uses torch's own OpenMP runtime and thread count.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));

#if defined(__AVX512F__)
#include <immintrin.h>
static inline v16 load16(const float* p) { return (v16)_mm512_loadu_ps(p); }
static inline float hsum(v16 v) { return _mm512_reduce_add_ps((__m512)v); }
#else
static inline v16 load16(const float* p) {
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

/* The sum of a vector's lanes, by halves (a few shuffles, not 16 extractions). */
static inline float hsum(v16 v) {
    v8 lo, hi;
    memcpy(&lo, &v, sizeof lo);
    memcpy(&hi, (const char*)&v + sizeof lo, sizeof hi);
    const v8 s8 = lo + hi;
    v4 l4, h4;
    memcpy(&l4, &s8, sizeof l4);
    memcpy(&h4, (const char*)&s8 + sizeof l4, sizeof h4);
    const v4 s4 = l4 + h4;
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}
#endif

/* The products past the last whole vector of a row (none when d is a multiple of 16). */
static inline float tail(const float* x, const float* y, int full, int d) {
    float s = 0.f;
    for (int k = full; k < d; k++) s += x[k] * y[k];
    return s;
}

static inline float dot(const float* x, const float* y, int d) {
    const int full = d - d % 16;
    v16 acc = {0};
    for (int k = 0; k < full; k += 16) acc += load16(x + k) * load16(y + k);
    return hsum(acc) + tail(x, y, full, d);
}

/* out[t * Tb + s] = X[t] . Y[s] for every s >= t when `upper`, else for every (t, s). Rows are
 * taken four at a time against columns two at a time, so each loaded vector serves several
 * products. */
static void gram(const float* X, const float* Y, int Ta, int Tb, int d, int upper, float* out) {
    const int full = d - d % 16;
    int t = 0;
    for (; t + 4 <= Ta; t += 4) {
        int s = upper ? t : 0;
        for (; s + 2 <= Tb; s += 2) {
            /* Eight named accumulators, so that they stay in registers. */
            v16 c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
            const float* x0 = X + (size_t)t * d;
            const float* y0 = Y + (size_t)s * d;
            for (int k = 0; k < full; k += 16) {
                const v16 u0 = load16(y0 + k), u1 = load16(y0 + d + k);
                v16 x = load16(x0 + k);
                c00 += x * u0;
                c01 += x * u1;
                x = load16(x0 + d + k);
                c10 += x * u0;
                c11 += x * u1;
                x = load16(x0 + 2 * (size_t)d + k);
                c20 += x * u0;
                c21 += x * u1;
                x = load16(x0 + 3 * (size_t)d + k);
                c30 += x * u0;
                c31 += x * u1;
            }
            float* o = out + (size_t)t * Tb + s;
            o[0] = hsum(c00) + tail(x0, y0, full, d);
            o[1] = hsum(c01) + tail(x0, y0 + d, full, d);
            o[Tb] = hsum(c10) + tail(x0 + d, y0, full, d);
            o[Tb + 1] = hsum(c11) + tail(x0 + d, y0 + d, full, d);
            o[2 * Tb] = hsum(c20) + tail(x0 + 2 * (size_t)d, y0, full, d);
            o[2 * Tb + 1] = hsum(c21) + tail(x0 + 2 * (size_t)d, y0 + d, full, d);
            o[3 * Tb] = hsum(c30) + tail(x0 + 3 * (size_t)d, y0, full, d);
            o[3 * Tb + 1] = hsum(c31) + tail(x0 + 3 * (size_t)d, y0 + d, full, d);
        }
        for (; s < Tb; s++)
            for (int r = 0; r < 4; r++) out[(t + r) * Tb + s] = dot(X + (size_t)(t + r) * d, Y + (size_t)s * d, d);
    }
    for (; t < Ta; t++)
        for (int s = upper ? t : 0; s < Tb; s++) out[t * Tb + s] = dot(X + (size_t)t * d, Y + (size_t)s * d, d);
}

/* The unit's two Gram matrices, in ga and gg (Ta * Tb floats each), reduced to out = sum_{t,s} (ga + bias) gg. */
static float unit_norm(const float* a, const float* b, const float* g, const float* h, int Ta, int Tb, int din,
                       int dout, float bias, int same, float* ga, float* gg) {
    gram(a, b, Ta, Tb, din, same, ga);
    gram(g, h, Ta, Tb, dout, same, gg);
    float total = 0.f;
    if (same) {
        float off = 0.f;
        for (int t = 0; t < Ta; t++) {
            total += (ga[t * Tb + t] + bias) * gg[t * Tb + t];
            for (int s = t + 1; s < Tb; s++) off += (ga[t * Tb + s] + bias) * gg[t * Tb + s];
        }
        return total + 2.f * off;
    }
    for (int i = 0; i < Ta * Tb; i++) total += (ga[i] + bias) * gg[i];
    return total;
}

#define STACK_CELLS 4096 /* Gram matrices up to 64 x 64 live on the stack; larger ones (packed units) on the heap */

/* Returns 0, or -1 when scratch memory could not be had for some unit (its out is then NaN). */
int ghost_norms(const float* a, const float* b, const float* g, const float* h, int n_units, int Ta, int Tb,
                int din, int dout, float bias, int same, int threads, float* out) {
    const size_t cells = (size_t)Ta * Tb;
    int failed = 0;
    /* Loaded after torch, this is torch's OpenMP runtime, already set to torch's thread count: a
     * num_threads clause on every call measured slower than setting the count once. */
    if (omp_get_max_threads() != threads) omp_set_num_threads(threads);
#pragma omp parallel for schedule(static) reduction(| : failed)
    for (int n = 0; n < n_units; n++) {
        const float* an = a + (size_t)n * Ta * din;
        const float* bn = b + (size_t)n * Tb * din;
        const float* gn = g + (size_t)n * Ta * dout;
        const float* hn = h + (size_t)n * Tb * dout;
        if (cells <= STACK_CELLS) {
            float ga[STACK_CELLS], gg[STACK_CELLS];
            out[n] = unit_norm(an, bn, gn, hn, Ta, Tb, din, dout, bias, same, ga, gg);
        } else {
            float* scratch = malloc(2 * cells * sizeof(float));
            if (scratch == NULL) {
                out[n] = NAN;
                failed = 1;
                continue;
            }
            out[n] = unit_norm(an, bn, gn, hn, Ta, Tb, din, dout, bias, same, scratch, scratch + cells);
            free(scratch);
        }
    }
    return failed ? -1 : 0;
}
