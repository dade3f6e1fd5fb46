/* CUDA twin of the batched XRD profile renderer (kernels/xrd_render.h): one
 * thread block per pattern, the coarse level grids in shared memory (global
 * scratch when a grid is too long), the same shared math as the CPU
 * reference, so outputs agree to float rounding and noise is identical. */
#include "kernels/backend_internal.h"
#include "kernels/cuda_check.cuh"
#include "kernels/xrd_render.h"

#include <stdint.h>

/* 256 threads: 8 warps render peaks in parallel, and a 57 KB level set
 * (7001 points) lets 3-4 blocks share an sm_90 SM. */
#define XR_THREADS 256
#define XR_WARPS (XR_THREADS / 32)
/* Patterns per launch (levels in shared memory / spilled to global). */
#define XR_CHUNK 4096
#define XR_CHUNK_GLOBAL 256

struct xr_layout {
    int32_t top[K_XRD_MAX_LEVELS], off[K_XRD_MAX_LEVELS];
    int32_t lv_total;
    int32_t max_peaks; /* peak slots per pattern in the scratch buffer */
};

static __device__ float xr_block_max(float v, float *red)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncthreads(); /* red may still be read by a previous reduction */
    if (l == 0) red[w] = v;
    __syncthreads();
    float r = red[0];
    for (int i = 1; i < XR_WARPS; i++)
        r = fmaxf(r, red[i]);
    return r;
}

/* Phase c, family r, line l of flattened peak index idx. */
static __device__ void xr_unflatten(const k_xrd_pattern *p, const int32_t *pre, int idx, int *c,
                                    int *r, int *l)
{
    int k = 0;
    while (k + 1 < p->n_phases && idx >= pre[k + 1])
        k++;
    int loc = idx - pre[k];
    *c = k;
    *r = loc / p->n_lines;
    *l = loc % p->n_lines;
}

__global__ void __launch_bounds__(XR_THREADS)
    xr_render_kernel(k_xrd_grid g, xr_layout lay, const k_xrd_refl *__restrict__ refl,
                     const k_xrd_pattern *__restrict__ pats, int pattern0, float *__restrict__ out,
                     k_xrd_peak *__restrict__ scratch, float *__restrict__ glv, int use_smem)
{
    extern __shared__ float slv[];
    __shared__ k_xrd_pattern p;
    __shared__ int32_t pre[K_XRD_MAX_PHASES + 1];
    __shared__ float red[XR_WARPS];
    __shared__ int max_level;

    const int pi = blockIdx.x; /* pattern within this launch */
    const int tid = threadIdx.x, nth = blockDim.x;
    const int n = g.n_points;
    float *lv = use_smem ? slv : glv + (size_t)pi * (size_t)lay.lv_total;
    k_xrd_peak *pk = scratch + (size_t)pi * (size_t)lay.max_peaks;

    /* Pattern into shared memory (word copy), level buffers zeroed. */
    {
        const int32_t *src = (const int32_t *)&pats[pattern0 + pi];
        int32_t *dst = (int32_t *)&p;
        for (int i = tid; i < (int)(sizeof(k_xrd_pattern) / 4); i += nth)
            dst[i] = src[i];
    }
    for (int i = tid; i < lay.lv_total; i += nth)
        lv[i] = 0.0f;
    if (tid == 0) max_level = 0;
    __syncthreads();
    if (tid == 0) {
        pre[0] = 0;
        for (int c = 0; c < p.n_phases; c++)
            pre[c + 1] = pre[c] + p.phase[c].refl_count * p.n_lines;
    }
    __syncthreads();
    const int np = pre[p.n_phases];
    const float x_last = g.x0 + g.step * (float)(n - 1);
    const float mono_c2 = k_xrd_mono_c2(&p);

    /* 1. Every peak, one per thread, into the scratch slots; the tallest
     *    one centred on the grid is h_ref (else the tallest, else 1). An
     *    invalid peak gets fwhm 0 and is skipped when rendering. */
    float hin = 0.0f, hany = 0.0f;
    for (int idx = tid; idx < np; idx += nth) {
        int c, r, l;
        xr_unflatten(&p, pre, idx, &c, &r, &l);
        const k_xrd_phase *ph = &p.phase[c];
        k_xrd_peak q;
        int ok = k_xrd_peak_make(&g, &p, ph, &refl[ph->refl_offset + r], l, mono_c2, &q);
        if (ok) {
            float h = q.h_lor + q.h_gau;
            hany = fmaxf(hany, h);
            if (q.x >= g.x0 && q.x <= x_last) hin = fmaxf(hin, h);
        } else {
            q.fwhm = 0.0f;
        }
        pk[idx] = q;
    }
    hin = xr_block_max(hin, red);
    hany = xr_block_max(hany, red);
    const float h_ref = hin > 0.0f ? hin : (hany > 0.0f ? hany : 1.0f);
    for (int i = tid; i < p.n_impurities; i += nth)
        k_xrd_impurity_make(&g, &p, i, h_ref, &pk[np + i]);
    __syncthreads(); /* scratch peaks visible to every warp */

    /* 2. One warp per peak, lanes over its window points; shared-memory
     *    atomics (the sum order differs from the CPU only by rounding). */
    const int warp = tid >> 5, lane = tid & 31;
    int my_max = 0;
    for (int idx = warp; idx < np + p.n_impurities; idx += XR_WARPS) {
        k_xrd_peak q = pk[idx];
        if (!(q.fwhm > 0.0f)) continue;
        k_xrd_plan pl;
        k_xrd_peak_plan(&g, q.x, q.fwhm, q.h_lor, q.h_gau, h_ref, &pl);
        for (int t = 0; t < 2; t++) {
            if (pl.k1[t] < pl.k0[t]) continue;
            const int lvl = pl.level[t], kind = pl.kind[t];
            float kc, du;
            k_xrd_tier_frame(&g, q.x, q.fwhm, lvl, &kc, &du);
            float *b = lv + lay.off[lvl] + 2;
            for (int k = pl.k0[t] + lane; k <= pl.k1[t]; k += 32)
                atomicAdd(&b[k], k_xrd_tier_value(kind, q.h_lor, q.h_gau, ((float)k - kc) * du));
            my_max = lvl > my_max ? lvl : my_max;
        }
    }
    /* Background (smooth) on its coarse level, relative to h_ref. */
    k_xrd_bg bg;
    k_xrd_bg_init(&g, &p, h_ref, &bg);
    if (bg.any) my_max = bg.level > my_max ? bg.level : my_max;
    if (my_max > 0) atomicMax(&max_level, my_max);
    __syncthreads();
    if (bg.any) {
        float *b = lv + lay.off[bg.level] + 2;
        const float sc = (float)(1 << bg.level);
        for (int k = -2 + tid; k <= lay.top[bg.level] + 2; k += nth)
            b[k] += k_xrd_bg_at(&bg, (float)k * sc);
        __syncthreads();
    }

    /* 3. Refine the levels down to the output grid (4-point subdivision). */
    for (int l = max_level; l >= 1; l--) {
        float *lo = lv + lay.off[l - 1] + 2;
        const float *up = lv + lay.off[l] + 2;
        const int top_lo = lay.top[l - 1];
        const int kmax = (top_lo + 2) / 2;
        for (int k = -1 + tid; k <= kmax; k += nth) {
            lo[2 * k] += up[k];
            lo[2 * k + 1] += (9.0f * (up[k] + up[k + 1]) - (up[k - 1] + up[k + 2])) * 0.0625f;
        }
        __syncthreads();
    }
    float *y = lv + lay.off[0] + 2;

    /* 4. The noiseless maximum S. */
    float m = -INFINITY;
    for (int j = tid; j < n; j += nth)
        m = fmaxf(m, y[j]);
    const float smax = xr_block_max(m, red);

    /* 5. Noise: block b gives the normals of points b + q nb, q = 0..3. */
    if (smax > 0.0f && (p.noise_sigma > 0.0f || p.poisson_counts > 0.0f)) {
        const int nb = (n + 3) / 4;
        const float is = 1.0f / smax, sigma = p.noise_sigma, s2 = sigma * sigma;
        const float counts = p.poisson_counts, ic = counts > 0.0f ? 1.0f / counts : 0.0f;
        for (int b = tid; b < nb; b += nth) {
            pid_u32x4 w = pid_rng_block(p.noise_seed, p.noise_stream, (uint64_t)b);
            float nn[4];
            k_xrd_box_muller(w.v[0], w.v[1], &nn[0], &nn[1]);
            k_xrd_box_muller(w.v[2], w.v[3], &nn[2], &nn[3]);
            int have_u = 0;
            pid_u32x4 uw;
            for (int q = 0; q < 4; q++) {
                int j = b + q * nb;
                if (j >= n) break;
                int exact;
                float d = k_xrd_noise_fast(y[j], smax, is, sigma, s2, counts, ic, nn[q], &exact);
                if (exact) {
                    if (!have_u) {
                        uw = pid_rng_block(p.noise_seed, p.noise_stream,
                                           K_XRD_POISSON_BLOCK0 + (uint64_t)b);
                        have_u = 1;
                    }
                    d = smax *
                        k_xrd_noise_value(sigma, counts, y[j] * is, nn[q], pid_u01f(uw.v[q]));
                }
                y[j] += d;
            }
        }
        __syncthreads();
    }

    /* 6. Normalize to a maximum of exactly 1, as the CPU does. */
    m = -INFINITY;
    for (int j = tid; j < n; j += nth)
        m = fmaxf(m, y[j]);
    const float mx = xr_block_max(m, red);
    float *o = out + (size_t)(pattern0 + pi) * (size_t)n;
    const float inv = mx > 0.0f ? 1.0f / mx : 1.0f;
    for (int j = tid; j < n; j += nth) {
        float v = fminf(y[j] * inv, 1.0f);
        o[j] = mx > 0.0f ? (y[j] == mx ? 1.0f : v) : y[j];
    }
}

extern "C" pid_status k_xrd_render_cuda(pid_backend *be, const k_xrd_grid *grid,
                                        const k_xrd_refl *refl, int n_refl,
                                        const k_xrd_pattern *pats, int n_patterns, float *out,
                                        pid_error *err)
{
    pid_status st = k_xrd_render_validate(grid, NULL, n_refl, pats, n_patterns, err);
    if (st) return st;
    if (!be || pid_backend_kind(be) != PID_DEVICE_CUDA)
        return pid_fail(err, PID_ERR_ARG, "xrd render: the CUDA twin needs a CUDA backend");
    if (n_patterns == 0) return PID_OK;
    if (!out || (n_refl > 0 && !refl))
        return pid_fail(err, PID_ERR_ARG, "xrd render: missing reflection table or output");

    cudaStream_t s = (cudaStream_t)pid_backend_cuda_stream(be);
    k_xrd_pattern *d_pats = NULL;
    k_xrd_peak *d_scratch = NULL;
    float *d_glv = NULL;
    xr_layout lay;
    lay.lv_total = k_xrd_level_layout(grid->n_points, lay.top, lay.off);
    int max_peaks = 1;
    for (int i = 0; i < n_patterns; i++) {
        int c = pats[i].n_impurities;
        for (int k = 0; k < pats[i].n_phases; k++)
            c += pats[i].phase[k].refl_count * pats[i].n_lines;
        max_peaks = c > max_peaks ? c : max_peaks;
    }
    lay.max_peaks = max_peaks;

    int dev = 0, smem_optin = 0, use_smem = 0, chunk = 0;
    const size_t smem = sizeof(float) * (size_t)lay.lv_total;
    PID_CUDA_CHECK(cudaGetDevice(&dev));
    PID_CUDA_CHECK(
        cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    /* Static shared memory (pattern, reductions) takes ~1 KB of the budget. */
    use_smem = smem + 2048 <= (size_t)smem_optin;
    /* Spilled levels take smem bytes of global memory per pattern in flight:
     * fewer patterns per launch then. */
    chunk = use_smem ? XR_CHUNK : XR_CHUNK_GLOBAL;
    chunk = n_patterns < chunk ? n_patterns : chunk;
    if (use_smem)
        PID_CUDA_CHECK(cudaFuncSetAttribute(
            xr_render_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    PID_CUDA_CHECK(
        cudaMallocAsync((void **)&d_pats, sizeof(k_xrd_pattern) * (size_t)n_patterns, s));
    PID_CUDA_CHECK(cudaMemcpyAsync(d_pats, pats, sizeof(k_xrd_pattern) * (size_t)n_patterns,
                                   cudaMemcpyHostToDevice, s));
    PID_CUDA_CHECK(cudaMallocAsync((void **)&d_scratch,
                                   sizeof(k_xrd_peak) * (size_t)max_peaks * (size_t)chunk, s));
    if (!use_smem) PID_CUDA_CHECK(cudaMallocAsync((void **)&d_glv, smem * (size_t)chunk, s));
    for (int p0 = 0; p0 < n_patterns; p0 += chunk) {
        int cnt = n_patterns - p0 < chunk ? n_patterns - p0 : chunk;
        xr_render_kernel<<<cnt, XR_THREADS, use_smem ? smem : 0, s>>>(
            *grid, lay, refl, d_pats, p0, out, d_scratch, d_glv, use_smem);
        PID_CUDA_CHECK_LAUNCH();
    }
    PID_CUDA_CHECK(cudaFreeAsync(d_pats, s));
    d_pats = NULL;
    PID_CUDA_CHECK(cudaFreeAsync(d_scratch, s));
    d_scratch = NULL;
    if (d_glv) {
        PID_CUDA_CHECK(cudaFreeAsync(d_glv, s));
        d_glv = NULL;
    }
    PID_CUDA_CHECK(cudaStreamSynchronize(s));
    return PID_OK;
fail:
    if (d_pats) cudaFreeAsync(d_pats, s);
    if (d_scratch) cudaFreeAsync(d_scratch, s);
    if (d_glv) cudaFreeAsync(d_glv, s);
    cudaStreamSynchronize(s);
    return st;
}
