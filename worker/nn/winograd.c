/* Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions (Lavin & Gray 2015):
 * a 4x4 output tile costs 36 multiplies per (input, output) channel pair
 * instead of 144.  Per tile and channel the input patch d (6x6) becomes
 * V = B^T d B, a filter g (3x3) becomes U = G g G^T, and the output tile is
 * Y = A^T (sum_c U .* V) A; the sum over channels is 36 GEMMs (one per
 * position xi of the 6x6 tile) over a chunk of tiles:
 *   M[xi] [OC, T] = U[xi] [OC, C] x V[xi] [C, T].
 * Backward: the input gradient is the same machinery on the output gradient
 * with the flipped, transposed filters (pad 2 - pad); the filter gradient is
 * exact in the transformed domain, dU[xi] += dM[xi] x V[xi]^T with
 * dM = A dY A^T, and dW = G^T dU G.
 *
 * Eight tiles are transformed at once in 8-wide vectors (GCC vector
 * extensions: AVX2 with the engine's flags, plain SSE or scalar code
 * elsewhere), taken from "super-rows" that put several images side by side
 * (see wgeom), and a chunk of tiles keeps V and M near the cache. */
#include <string.h>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "kernels.h"

typedef float v8 __attribute__((vector_size(32)));
typedef int vi8 __attribute__((vector_size(32)));

#define WINO_CHUNK_FLOATS (256u << 10)   /* V of one chunk: ~1 MB */
#define WINO_TILE_MAX 128                /* tiles per chunk at most */

/* A pass's tiling.  Tiles are walked in super-rows: tile row th of G images
 * side by side, each image in a slot of S = TW + 1 tiles (4*S columns, the
 * last tile a dummy that is never stored), so eight consecutive tiles fill
 * a vector even on 7x7 maps.  A chunk is G whole images (rows = TH) or, for
 * large images, `rows` tile rows of one image (G = 1). */
typedef struct wgeom {
    int Cin, Hin, Win, Cout, Hout, Wout, pad;   /* the conv this pass computes */
    int TH, TW, S;             /* tiles per column / row; slots per image */
    int G, rows;               /* images side by side; tile rows per chunk */
    int groups;                /* groups of 8 slots in a super-row */
    int Wsp;                   /* super-row buffer width (floats) */
} wgeom;

/* The lanes of one group of 8 slots (see group_lanes). */
typedef struct wlanes {
    int perm[8], expand[8], tw4[8];
    int cnt;
} wlanes;

static void geom_init(wgeom *g, int Cin, int Hin, int Win, int Cout, int pad)
{
    g->Cin = Cin;
    g->Hin = Hin;
    g->Win = Win;
    g->Cout = Cout;
    g->pad = pad;
    g->Hout = Hin + 2 * pad - 2;
    g->Wout = Win + 2 * pad - 2;
    g->TH = (g->Hout + 3) / 4;
    g->TW = (g->Wout + 3) / 4;
    g->S = g->TW + 1;
    int cmax = Cin > Cout ? Cin : Cout;
    int tiles = (int)(WINO_CHUNK_FLOATS / (36u * (unsigned)cmax));
    if (tiles > WINO_TILE_MAX) tiles = WINO_TILE_MAX;
    if (tiles < 1) tiles = 1;
    if (g->TH * g->TW <= tiles) {
        g->G = tiles / (g->TH * g->TW);
        g->rows = g->TH;
    } else {
        g->G = 1;
        g->rows = tiles / g->TW;
        if (g->rows < 1) g->rows = 1;
    }
    g->groups = (g->G * g->S + 7) / 8;
    g->Wsp = 32 * g->groups + 2 + 8;   /* + the 8-wide reads and tails */
}

/* The zero-padded input of a chunk, for one channel: 4*rows + 2 rows of Wsp
 * floats; slot k, column x of row y hold image n0+k's input
 * (4*th0 - pad + y, x - pad).  Outside the images it is zero. */
static size_t plane_floats(const wgeom *g)
{
    return (size_t)(4 * g->rows + 2) * g->Wsp + 8;
}

/* nn_wino_eligible: see kernels.h. */
int nn_wino_eligible(const nn_conv_dims *d)
{
    return d->K == 3 && d->stride == 1 && d->pad <= 2 && d->C >= 8 && d->OC >= 8 &&
           d->OH >= 4 && d->OW >= 4 && (size_t)d->C * d->OC <= 128 * 128;
}

/* nn_wino_pool_ok: see kernels.h. */
int nn_wino_pool_ok(const nn_conv_dims *d)
{
    return nn_wino_eligible(d) && d->OH >= 2 && d->OW >= 2;
}

/* nn_wino_u_size: see kernels.h. */
size_t nn_wino_u_size(const nn_conv_dims *d)
{
    return (size_t)36 * d->OC * d->C;
}

static size_t chunk_tiles(const wgeom *g)
{
    return (size_t)g->G * g->rows * g->TW;
}

/* nn_wino_scratch_size: see kernels.h. */
size_t nn_wino_scratch_size(const nn_conv_dims *d)
{
    wgeom f, b;
    geom_init(&f, d->C, d->H, d->W, d->OC, d->pad);         /* forward, dW */
    geom_init(&b, d->OC, d->OH, d->OW, d->C, 2 - d->pad);   /* input gradient */
    size_t cmax = (size_t)(d->C > d->OC ? d->C : d->OC);
    size_t t = chunk_tiles(&f) > chunk_tiles(&b) ? chunk_tiles(&f) : chunk_tiles(&b);
    size_t pf = plane_floats(&f) > plane_floats(&b) ? plane_floats(&f) : plane_floats(&b);
    size_t wp = (size_t)(f.Wsp > b.Wsp ? f.Wsp : b.Wsp);
    size_t gr = (size_t)(f.groups > b.groups ? f.groups : b.groups);
    /* V and M (or dM) for a chunk, the padded input plane, 4 output rows,
     * the lane tables */
    return 2 * 36 * (cmax * t + 8) + pf + 4 * wp + gr * (sizeof(wlanes) / sizeof(float) + 1);
}

/* ---- 1-D transforms (on 8 tiles at once) ------------------------------------------ */

/* B^T (6x6) applied to d[0], d[s], ..., d[5s] */
static inline void bt6(v8 *o, int os, const v8 *d, int s)
{
    v8 d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s];
    o[0] = 4.0f * d0 - 5.0f * d2 + d4;
    o[os] = -4.0f * (d1 + d2) + d3 + d4;
    o[2 * os] = 4.0f * (d1 - d2) - d3 + d4;
    o[3 * os] = 2.0f * (d3 - d1) - d2 + d4;
    o[4 * os] = 2.0f * (d1 - d3) - d2 + d4;
    o[5 * os] = 4.0f * d1 - 5.0f * d3 + d5;
}

/* A^T (4x6) */
static inline void at6(v8 *o, int os, const v8 *m, int s)
{
    v8 m1 = m[s], m2 = m[2 * s], m3 = m[3 * s], m4 = m[4 * s];
    v8 a = m1 + m2, b = m1 - m2, c = m3 + m4, e = m3 - m4;
    o[0] = m[0] + a + c;
    o[os] = b + 2.0f * e;
    o[2 * os] = a + 4.0f * c;
    o[3 * os] = b + 8.0f * e + m[5 * s];
}

/* A (6x4): dM rows from dY */
static inline void a4(v8 *o, int os, const v8 *y, int s)
{
    v8 y0 = y[0], y1 = y[s], y2 = y[2 * s], y3 = y[3 * s];
    v8 p = y0 + y2, q = y1 + y3, r = y0 + 4.0f * y2, u = 2.0f * y1 + 8.0f * y3;
    o[0] = y0;
    o[os] = p + q;
    o[2 * os] = p - q;
    o[3 * os] = r + u;
    o[4 * os] = r - u;
    o[5 * os] = y3;
}

/* ---- filters ---------------------------------------------------------------------------- */

/* G (6x3) */
static inline void g3(v8 *o, int os, const v8 *w, int s)
{
    v8 w0 = w[0], w1 = w[s], w2 = w[2 * s];
    v8 a = w0 + w2;
    o[0] = 0.25f * w0;
    o[os] = (-1.0f / 6.0f) * (a + w1);
    o[2 * os] = (-1.0f / 6.0f) * (a - w1);
    o[3 * os] = (1.0f / 24.0f) * w0 + (1.0f / 12.0f) * w1 + (1.0f / 6.0f) * w2;
    o[4 * os] = (1.0f / 24.0f) * w0 - (1.0f / 12.0f) * w1 + (1.0f / 6.0f) * w2;
    o[5 * os] = w2;
}

/* G^T (3x6) */
static inline void gt6(v8 *o, int os, const v8 *u, int s)
{
    v8 k1 = u[s], k2 = u[2 * s], k3 = u[3 * s], k4 = u[4 * s];
    o[0] = 0.25f * u[0] - (1.0f / 6.0f) * (k1 + k2) + (1.0f / 24.0f) * (k3 + k4);
    o[os] = (1.0f / 6.0f) * (k2 - k1) + (1.0f / 12.0f) * (k3 - k4);
    o[2 * os] = (1.0f / 6.0f) * (k3 + k4 - k1 - k2) + u[5 * s];
}

/* U [36][OC][C] rows oc0..oc1 (flip = 0), or Ut [36][C][OC] columns oc0..oc1
 * from the flipped filters (flip = 1).  Eight filters per vector: along c
 * for U, along oc for Ut. */
static void filters(float *U, const float *weight, const nn_conv_dims *d, int oc0, int oc1,
                    int flip)
{
    const int C = d->C, OC = d->OC;
    const size_t stride = (size_t)OC * C;
    float w[9][8] __attribute__((aligned(32)));
    v8 t[18], o[36];
    /* flip: groups of 8 oc for each c; else groups of 8 c for each oc */
    const int outer0 = flip ? 0 : oc0, outer1 = flip ? C : oc1;
    const int inner0 = flip ? oc0 : 0, inner1 = flip ? oc1 : C;
    for (int a = outer0; a < outer1; a++) {
        for (int b0 = inner0; b0 < inner1; b0 += 8) {
            int nb = inner1 - b0 < 8 ? inner1 - b0 : 8;
            for (int j = 0; j < 8; j++) {
                int b = b0 + (j < nb ? j : 0);
                const float *g = flip ? weight + ((size_t)b * C + a) * 9
                                      : weight + ((size_t)a * C + b) * 9;
                for (int i = 0; i < 9; i++) w[i][j] = g[flip ? 8 - i : i];
            }
            const v8 *wv = (const v8 *)w;
            for (int j = 0; j < 3; j++) g3(&t[j], 3, &wv[j], 3);       /* t[k][j] */
            for (int k = 0; k < 6; k++) g3(&o[k * 6], 1, &t[k * 3], 1); /* o[k][l] */
            float *dst = U + (size_t)a * (flip ? OC : C) + b0;
            for (int xi = 0; xi < 36; xi++) {
                float lane[8] __attribute__((aligned(32)));
                memcpy(lane, &o[xi], sizeof lane);
                memcpy(dst + (size_t)xi * stride, lane, sizeof(float) * (size_t)nb);
            }
        }
    }
}

/* nn_wino_filter: see kernels.h. */
void nn_wino_filter(float *U, const float *weight, const nn_conv_dims *d, int oc0, int oc1)
{
    filters(U, weight, d, oc0, oc1, 0);
}

/* nn_wino_filter_t: see kernels.h. */
void nn_wino_filter_t(float *Ut, const float *weight, const nn_conv_dims *d, int oc0, int oc1)
{
    filters(Ut, weight, d, oc0, oc1, 1);
}

/* nn_wino_filter_grad: see kernels.h. */
void nn_wino_filter_grad(float *dweight, const float *dU, const nn_conv_dims *d, int oc0,
                         int oc1)
{
    const int C = d->C;
    const size_t stride = (size_t)d->OC * C;
    float u[36][8] __attribute__((aligned(32)));
    float r[9][8] __attribute__((aligned(32)));
    v8 t[18], o[9];
    for (int oc = oc0; oc < oc1; oc++) {
        for (int c0 = 0; c0 < C; c0 += 8) {
            int nb = C - c0 < 8 ? C - c0 : 8;
            const float *src = dU + (size_t)oc * C + c0;
            for (int xi = 0; xi < 36; xi++) {
                memset(u[xi], 0, sizeof u[xi]);
                memcpy(u[xi], src + (size_t)xi * stride, sizeof(float) * (size_t)nb);
            }
            const v8 *uv = (const v8 *)u;
            for (int l = 0; l < 6; l++) gt6(&t[l], 6, &uv[l], 6);       /* t[i][l] */
            for (int i = 0; i < 3; i++) gt6(&o[i * 3], 1, &t[i * 6], 1); /* o[i][j] */
            memcpy(r, o, sizeof r);
            for (int j = 0; j < nb; j++) {
                float *dw = dweight + ((size_t)oc * C + c0 + j) * 9;
                for (int i = 0; i < 9; i++) dw[i] += r[i][j];
            }
        }
    }
}

/* ---- tiles ---------------------------------------------------------------------------------- */

/* dst[0..n) = src[0..n): rows of a few dozen floats, where a memcpy call
 * costs more than the copy. */
static inline void copy_row(float *dst, const float *src, int n)
{
#ifdef __AVX2__
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_loadu_ps(src + i));
    if (i + 4 <= n) {
        _mm_storeu_ps(dst + i, _mm_loadu_ps(src + i));
        i += 4;
    }
    for (; i < n; i++) dst[i] = src[i];
#else
    memcpy(dst, src, sizeof(float) * (size_t)n);
#endif
}

/* Like copy_row, into a row of the zero-padded plane: the tail is stored 8
 * wide with zeros in the lanes past n (a masked store is slow on some
 * cores), which may run into the padding or the next row, written later. */
static inline void copy_row_padded(float *dst, const float *src, int n)
{
#ifdef __AVX2__
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_loadu_ps(src + i));
    if (i < n) {
        __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - i),
                                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        _mm256_storeu_ps(dst + i, _mm256_maskload_ps(src + i, m));
    }
#else
    memcpy(dst, src, sizeof(float) * (size_t)n);
#endif
}

/* P[q][j] = row[4j + q] for q = 0..nq-1 (nq <= 6), j = 0..7: the column q
 * of the 8 tiles starting at row[0].  Reads row[0..4*8+1]. */
static inline void deinterleave(v8 *P, const float *row, int nq)
{
#ifdef __AVX2__
    __m256 a0 = _mm256_loadu_ps(row), a1 = _mm256_loadu_ps(row + 8);
    __m256 a2 = _mm256_loadu_ps(row + 16), a3 = _mm256_loadu_ps(row + 24);
    __m256 b0 = _mm256_permute2f128_ps(a0, a2, 0x20), b2 = _mm256_permute2f128_ps(a0, a2, 0x31);
    __m256 b1 = _mm256_permute2f128_ps(a1, a3, 0x20), b3 = _mm256_permute2f128_ps(a1, a3, 0x31);
    __m256 u0 = _mm256_unpacklo_ps(b0, b2), u1 = _mm256_unpackhi_ps(b0, b2);
    __m256 u2 = _mm256_unpacklo_ps(b1, b3), u3 = _mm256_unpackhi_ps(b1, b3);
    __m256 p0 = _mm256_shuffle_ps(u0, u2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 p1 = _mm256_shuffle_ps(u0, u2, _MM_SHUFFLE(3, 2, 3, 2));
    P[0] = (v8)p0;
    P[1] = (v8)p1;
    P[2] = (v8)_mm256_shuffle_ps(u1, u3, _MM_SHUFFLE(1, 0, 1, 0));
    P[3] = (v8)_mm256_shuffle_ps(u1, u3, _MM_SHUFFLE(3, 2, 3, 2));
    if (nq > 4) {
        const __m256i idx = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7);
        P[4] = (v8)_mm256_blend_ps(_mm256_permutevar8x32_ps(p0, idx), _mm256_broadcast_ss(row + 32), 0x80);
        P[5] = (v8)_mm256_blend_ps(_mm256_permutevar8x32_ps(p1, idx), _mm256_broadcast_ss(row + 33), 0x80);
    }
#else
    float buf[6][8];
    for (int q = 0; q < nq; q++)
        for (int j = 0; j < 8; j++) buf[q][j] = row[4 * j + q];
    memcpy(P, buf, sizeof(v8) * (size_t)nq);
#endif
}

/* out[4j + b] = Y[b][j] for b = 0..3, j = 0..7 (32 floats). */
static inline void interleave(float *out, const v8 *Y)
{
#ifdef __AVX2__
    __m256 y0 = (__m256)Y[0], y1 = (__m256)Y[1], y2 = (__m256)Y[2], y3 = (__m256)Y[3];
    __m256 u0 = _mm256_unpacklo_ps(y0, y1), u1 = _mm256_unpackhi_ps(y0, y1);
    __m256 u2 = _mm256_unpacklo_ps(y2, y3), u3 = _mm256_unpackhi_ps(y2, y3);
    __m256 s0 = _mm256_shuffle_ps(u0, u2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s1 = _mm256_shuffle_ps(u0, u2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(u1, u3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s3 = _mm256_shuffle_ps(u1, u3, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(s0, s1, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(s2, s3, 0x20));
    _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(s0, s1, 0x31));
    _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(s2, s3, 0x31));
#else
    float buf[4][8];
    memcpy(buf, Y, sizeof buf);
    for (int j = 0; j < 8; j++)
        for (int b = 0; b < 4; b++) out[4 * j + b] = buf[b][j];
#endif
}

/* Transformed blocks [36][channels][T] keep 8 spare floats after each of
 * the 36 slices: a group of fewer than 8 tiles is stored 8 wide, and its
 * extra lanes land on tiles written later or in the spare floats. */
static size_t xi_stride(int channels, size_t T)
{
    return (size_t)channels * T + 8;
}

/* A chunk: images [n0, n0 + Gc), tile rows [th0, th1); tile (th, k, tw)
 * is number ((th - th0) * Gc + k) * TW + tw of its T tiles. */
typedef struct wchunk {
    int n0, Gc, th0, th1;
    size_t T;
} wchunk;

/* The lanes of the 8 tiles starting at slot position gp of a super-row:
 * lane j is tile (k, tw) = ((gp + j) / S, (gp + j) % S), stored when
 * tw < TW and k < Gc.  perm lists the stored lanes in order (their count is
 * returned), expand[j] is lane j's rank among them, tw4[j] = 4 * tw. */
static int group_lanes(const wgeom *g, int Gc, int gp, int perm[8], int expand[8], int tw4[8])
{
    int cnt = 0;
    /* called once per group and chunk (lanes_fill): the divisions stay out
     * of the transforms */
    for (int j = 0; j < 8; j++) {
        int k = (gp + j) / g->S, tw = (gp + j) % g->S;
        perm[j] = 0;
        expand[j] = 0;
        tw4[j] = 4 * (tw < g->TW ? tw : 0);
        if (k < Gc && tw < g->TW) {
            expand[j] = cnt;
            perm[cnt++] = j;
        }
    }
    return cnt;
}

/* The lane tables of every group of a chunk with Gc images. */
static void lanes_fill(wlanes *L, const wgeom *g, int Gc)
{
    for (int gi = 0; gi * 8 < Gc * g->S; gi++)
        L[gi].cnt = group_lanes(g, Gc, gi * 8, L[gi].perm, L[gi].expand, L[gi].tw4);
}

/* Unaligned 8-float loads and stores as single 256-bit moves (a memcpy may
 * become two 128-bit halves, and a whole load after half stores stalls). */
static inline v8 load8(const float *p)
{
#ifdef __AVX2__
    return (v8)_mm256_loadu_ps(p);
#else
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
#endif
}

static inline void store8(float *p, v8 v)
{
#ifdef __AVX2__
    _mm256_storeu_ps(p, (__m256)v);
#else
    memcpy(p, &v, sizeof v);
#endif
}

/* v with its lanes reordered: out[m] = v[idx[m]]. */
static inline v8 permute(v8 v, const int idx[8])
{
#ifdef __AVX2__
    return (v8)_mm256_permutevar8x32_ps((__m256)v, _mm256_loadu_si256((const __m256i *)idx));
#else
    float a[8], o[8];
    memcpy(a, &v, sizeof a);
    for (int m = 0; m < 8; m++) o[m] = a[idx[m] & 7];
    memcpy(&v, o, sizeof o);
    return v;
#endif
}

/* Fill the padded plane of channel c for chunk ch from x [N][Cin][Hin][Win]. */
static void plane_fill(float *pl, const float *x, int c, const wgeom *g, const wchunk *ch)
{
    const size_t plane = (size_t)g->Hin * g->Win;
    const int nrow = 4 * (ch->th1 - ch->th0) + 2;
    for (int k = 0; k < ch->Gc; k++) {
        const float *src = x + ((size_t)(ch->n0 + k) * g->Cin + c) * plane;
        for (int y = 0; y < nrow; y++) {
            float *row = pl + (size_t)y * g->Wsp + (size_t)k * 4 * g->S + g->pad;
            int ih = 4 * ch->th0 - g->pad + y;
            if (ih >= 0 && ih < g->Hin)
                copy_row_padded(row, src + (size_t)ih * g->Win, g->Win);
            else
                memset(row, 0, sizeof(float) * (size_t)g->Win);
        }
    }
}

/* V [36][Cin][T] of chunk ch from x [N][Cin][Hin][Win]; pl: the padded plane
 * (cleared once per pass: only the images' interiors are ever written). */
static void input_transform(float *V, float *pl, const float *x, const wgeom *g,
                            const wchunk *ch, const wlanes *L)
{
    const size_t T = ch->T, vs = xi_stride(g->Cin, T);
    const int width = ch->Gc * g->S;
    v8 d[36], tmp[36], out[36];
    for (int c = 0; c < g->Cin; c++) {
        plane_fill(pl, x, c, g, ch);
        size_t t = 0;
        for (int th = ch->th0; th < ch->th1; th++) {
            const float *rows = pl + (size_t)(4 * (th - ch->th0)) * g->Wsp;
            for (int gp = 0; gp < width; gp += 8) {
                const int cnt = L[gp / 8].cnt;
                const int *perm = L[gp / 8].perm;
                for (int r = 0; r < 6; r++) {
                    v8 P[6];
                    deinterleave(P, rows + (size_t)r * g->Wsp + 4 * gp, 6);
                    for (int cc = 0; cc < 6; cc++) d[r * 6 + cc] = P[cc];
                }
                for (int cc = 0; cc < 6; cc++) bt6(&tmp[cc], 6, &d[cc], 6);   /* columns */
                for (int k = 0; k < 6; k++) bt6(&out[k * 6], 1, &tmp[k * 6], 1); /* rows */
                float *dst = V + (size_t)c * T + t;
                if (cnt == 8) {
                    for (int xi = 0; xi < 36; xi++) store8(dst + (size_t)xi * vs, out[xi]);
                } else {   /* 8 wide: the extra lanes land on tiles written later */
                    for (int xi = 0; xi < 36; xi++) {
                        store8(dst + (size_t)xi * vs, permute(out[xi], perm));
                    }
                }
                t += (size_t)cnt;
            }
        }
    }
}

/* y [N][Cout][Hout][Wout] (+ bias, then ep) from M [36][Cout][T] of chunk ch;
 * ob: 4 rows of Wsp floats. */
static void output_transform(float *y, float *ob, const float *M, const float *bias,
                             const nn_epilogue *ep, const wgeom *g, const wchunk *ch,
                             const wlanes *L)
{
    const size_t T = ch->T, ms = xi_stride(g->Cout, T);
    const size_t plane = (size_t)g->Hout * g->Wout;
    const size_t obw = (size_t)g->Wsp, pw2 = (size_t)g->Wsp / 2;
    const int width = ch->Gc * g->S;
    const int pool = ep && ep->pool_out;
    const int PH = g->Hout / 2, PW = g->Wout / 2;
    v8 tmp[24], out[16];
    for (int oc = 0; oc < g->Cout; oc++) {
        const v8 zero = {0, 0, 0, 0, 0, 0, 0, 0};
        float sc = ep && ep->scale ? ep->scale[oc] : 1.0f;
        float sh = (ep && ep->shift ? ep->shift[oc] : 0.0f) + (bias ? bias[oc] : 0.0f) * sc;
        const v8 b = zero + sh, k = zero + sc;
        const int relu = ep && ep->relu;
        size_t t = 0;
        for (int th = ch->th0; th < ch->th1; th++) {
            for (int gp = 0; gp < width; gp += 8) {
                const int cnt = L[gp / 8].cnt;
                const int *expand = L[gp / 8].expand, *tw4 = L[gp / 8].tw4;
                const float *mp = M + (size_t)oc * T + t;
                for (int l = 0; l < 6; l++) {   /* column l: m[k][l], k = 0..5 -> tmp[a][l] */
                    v8 col[6];
                    for (int k2 = 0; k2 < 6; k2++) {
                        col[k2] = load8(mp + (size_t)(k2 * 6 + l) * ms);
                        if (cnt < 8) col[k2] = permute(col[k2], expand);
                    }
                    at6(&tmp[l], 6, col, 1);
                }
                t += (size_t)cnt;
                for (int a = 0; a < 4; a++) at6(&out[a * 4], 1, &tmp[a * 6], 1);
                if (pool) {                /* 2x2 max-pool of the 4x4 tiles */
                    v8 Y[16];
                    for (int i = 0; i < 16; i++) {
                        Y[i] = out[i] * k + b;
                        if (relu) Y[i] = (v8)((vi8)Y[i] & (Y[i] > zero));
                    }
                    vi8 col4;
                    memcpy(&col4, tw4, sizeof col4);
                    for (int pa = 0; pa < 2; pa++)
                        for (int pb = 0; pb < 2; pb++) {
                            const int r = 2 * pa, c = 2 * pb;
                            vi8 idx = col4 + ((4 * th + r) * g->Wout + c);
                            v8 m = Y[r * 4 + c];
                            const v8 cand[3] = {Y[r * 4 + c + 1], Y[(r + 1) * 4 + c], Y[(r + 1) * 4 + c + 1]};
                            const int off[3] = {1, g->Wout, g->Wout + 1};
                            vi8 best = idx;
                            for (int q = 0; q < 3; q++) {   /* first maximum wins */
                                vi8 gt = cand[q] > m;
                                m = (v8)(((vi8)cand[q] & gt) | ((vi8)m & ~gt));
                                best = ((idx + off[q]) & gt) | (best & ~gt);
                            }
                            float mf[8];
                            int32_t mi[8];
                            memcpy(mf, &m, sizeof mf);
                            memcpy(mi, &best, sizeof mi);
                            float *prow = ob + (size_t)pa * pw2;
                            int32_t *srow = (int32_t *)(ob + 2 * pw2) + (size_t)pa * pw2;
                            for (int j = 0; j < 8; j++) {
                                prow[2 * (gp + j) + pb] = mf[j];
                                srow[2 * (gp + j) + pb] = mi[j];
                            }
                        }
                    continue;
                }
                for (int a = 0; a < 4; a++) {
                    v8 Y[4];
                    for (int bb = 0; bb < 4; bb++) {
                        Y[bb] = out[a * 4 + bb] * k + b;
                        if (relu) Y[bb] = (v8)((vi8)Y[bb] & (Y[bb] > zero));   /* max(y, 0) */
                    }
                    interleave(ob + (size_t)a * obw + 4 * gp, Y);
                }
            }
            for (int kk = 0; kk < ch->Gc; kk++) {   /* the super-row back to the images */
                const size_t img = (size_t)(ch->n0 + kk) * g->Cout + oc;
                if (pool) {
                    const size_t po = img * (size_t)PH * PW;
                    for (int pa = 0; pa < 2 && 2 * th + pa < PH; pa++) {
                        copy_row(ep->pool_out + po + (size_t)(2 * th + pa) * PW,
                                 ob + (size_t)pa * pw2 + (size_t)kk * 2 * g->S, PW);
                        memcpy(ep->pool_switches + po + (size_t)(2 * th + pa) * PW,
                               (int32_t *)(ob + 2 * pw2) + (size_t)pa * pw2 + (size_t)kk * 2 * g->S,
                               sizeof(int32_t) * (size_t)PW);
                    }
                    continue;
                }
                float *dst = y + img * plane;
                for (int a = 0; a < 4 && 4 * th + a < g->Hout; a++)
                    copy_row(dst + (size_t)(4 * th + a) * g->Wout,
                             ob + (size_t)a * obw + (size_t)kk * 4 * g->S, g->Wout);
            }
        }
    }
}

/* dM [36][Cout][T] = A dY A^T for the output-gradient tiles of chunk ch;
 * yb: 4 rows of Wsp floats, cleared once per pass. */
static void grad_transform(float *dM, float *yb, const float *dy, const wgeom *g,
                           const wchunk *ch, const wlanes *L)
{
    const size_t T = ch->T, ms = xi_stride(g->Cout, T);
    const size_t plane = (size_t)g->Hout * g->Wout;
    const int width = ch->Gc * g->S;
    v8 yv[16], tmp[24], out[36];
    for (int oc = 0; oc < g->Cout; oc++) {
        size_t t = 0;
        for (int th = ch->th0; th < ch->th1; th++) {
            for (int kk = 0; kk < ch->Gc; kk++) {   /* 4 output rows per image, 0 past the edges */
                const float *src = dy + ((size_t)(ch->n0 + kk) * g->Cout + oc) * plane;
                for (int a = 0; a < 4; a++) {
                    float *row = yb + (size_t)a * g->Wsp + (size_t)kk * 4 * g->S;
                    if (4 * th + a < g->Hout)
                        copy_row(row, src + (size_t)(4 * th + a) * g->Wout, g->Wout);
                    else
                        memset(row, 0, sizeof(float) * (size_t)g->Wout);
                }
            }
            for (int gp = 0; gp < width; gp += 8) {
                const int cnt = L[gp / 8].cnt;
                const int *perm = L[gp / 8].perm;
                for (int a = 0; a < 4; a++) deinterleave(&yv[a * 4], yb + (size_t)a * g->Wsp + 4 * gp, 4);
                for (int bb = 0; bb < 4; bb++) a4(&tmp[bb], 4, &yv[bb], 4);   /* tmp[k][b] */
                for (int k = 0; k < 6; k++) a4(&out[k * 6], 1, &tmp[k * 4], 1);
                float *dst = dM + (size_t)oc * T + t;
                for (int xi = 0; xi < 36; xi++) {
                    store8(dst + (size_t)xi * ms, cnt < 8 ? permute(out[xi], perm) : out[xi]);
                }
                t += (size_t)cnt;
            }
        }
    }
}

/* The chunks of a pass over N images, in order. */
static int chunk_next(const wgeom *g, int N, wchunk *ch)
{
    if (ch->Gc == 0) {             /* first */
        ch->n0 = 0;
        ch->th0 = 0;
    } else if (ch->th1 < g->TH) {  /* more rows of the same image (G == 1) */
        ch->th0 = ch->th1;
    } else {
        ch->n0 += ch->Gc;
        ch->th0 = 0;
    }
    if (ch->n0 >= N) return 0;
    ch->Gc = N - ch->n0 < g->G ? N - ch->n0 : g->G;
    ch->th1 = ch->th0 + g->rows < g->TH ? ch->th0 + g->rows : g->TH;
    ch->T = (size_t)ch->Gc * (ch->th1 - ch->th0) * g->TW;
    return 1;
}

/* One Winograd convolution pass over Nimg images: y = conv(x, U). */
static void wino_pass(float *y, float *scratch, const float *x, const float *U,
                      const float *bias, const nn_epilogue *ep, const wgeom *g, int Nimg)
{
    const size_t cmax = (size_t)(g->Cin > g->Cout ? g->Cin : g->Cout);
    float *V = scratch, *M = scratch + 36 * (cmax * chunk_tiles(g) + 8);
    float *pl = M + 36 * (cmax * chunk_tiles(g) + 8), *ob = pl + plane_floats(g);
    wlanes *L = (wlanes *)(ob + 4 * (size_t)g->Wsp);
    memset(pl, 0, sizeof(float) * plane_floats(g));
    wchunk ch = {0};
    int lanes_for = -1;
    while (chunk_next(g, Nimg, &ch)) {
        int T = (int)ch.T;
        if (ch.Gc != lanes_for) lanes_fill(L, g, lanes_for = ch.Gc);
        input_transform(V, pl, x, g, &ch, L);
        for (int xi = 0; xi < 36; xi++)
            nn_gemm(0, 0, g->Cout, T, g->Cin, 1.0f, U + (size_t)xi * g->Cout * g->Cin, g->Cin,
                    V + (size_t)xi * xi_stride(g->Cin, ch.T), T, 0.0f,
                    M + (size_t)xi * xi_stride(g->Cout, ch.T), T);
        output_transform(y, ob, M, bias, ep, g, &ch, L);
    }
}

/* nn_conv2d_forward_wino: see kernels.h. */
void nn_conv2d_forward_wino(float *out, float *scratch, const float *in, const float *U,
                            const float *bias, const nn_epilogue *ep, const nn_conv_dims *d)
{
    wgeom g;
    geom_init(&g, d->C, d->H, d->W, d->OC, d->pad);
    wino_pass(out, scratch, in, U, bias, ep, &g, d->N);
}

/* nn_conv2d_backward_wino: see kernels.h. */
void nn_conv2d_backward_wino(float *din, float *dU, float *scratch, const float *dout,
                             const float *in, const float *Ut, const nn_conv_dims *d)
{
    if (din) {
        wgeom b;
        geom_init(&b, d->OC, d->OH, d->OW, d->C, 2 - d->pad);
        wino_pass(din, scratch, dout, Ut, NULL, NULL, &b, d->N);
    }
    if (!dU) return;
    wgeom g;
    geom_init(&g, d->C, d->H, d->W, d->OC, d->pad);
    const size_t cmax = (size_t)(d->C > d->OC ? d->C : d->OC);
    float *V = scratch, *dM = scratch + 36 * (cmax * chunk_tiles(&g) + 8);
    float *pl = dM + 36 * (cmax * chunk_tiles(&g) + 8), *yb = pl + plane_floats(&g);
    wlanes *L = (wlanes *)(yb + 4 * (size_t)g.Wsp);
    memset(pl, 0, sizeof(float) * (plane_floats(&g) + 4 * (size_t)g.Wsp));
    wchunk ch = {0};
    int lanes_for = -1;
    while (chunk_next(&g, d->N, &ch)) {
        int T = (int)ch.T;
        if (ch.Gc != lanes_for) lanes_fill(L, &g, lanes_for = ch.Gc);
        input_transform(V, pl, in, &g, &ch, L);
        grad_transform(dM, yb, dout, &g, &ch, L);
        for (int xi = 0; xi < 36; xi++)
            nn_gemm(0, 1, d->OC, d->C, T, 1.0f, dM + (size_t)xi * xi_stride(d->OC, ch.T), T,
                    V + (size_t)xi * xi_stride(d->C, ch.T), T, 1.0f,
                    dU + (size_t)xi * d->OC * d->C, d->C);
    }
}
