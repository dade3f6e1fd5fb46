/* Batched powder XRD profile renderer: plain-data parameters for a batch of
 * patterns (phases with strained cells, texture, size/strain broadening,
 * instrument, background, impurity peaks, noise) and the op that turns them
 * into n_patterns x n_points float32 profiles, with a CPU reference
 * (xrd_render.c) and a CUDA twin (xrd_render.cu) sharing the math below.
 *
 * Model, per pattern (2-theta in degrees unless noted):
 *  - Peak positions: 1/d^2 = h G* h with the phase's strained reciprocal
 *    metric, sin(theta) = lambda / (2 d) for each source line, then
 *    2theta_obs = 2theta + zero_shift + (180/pi) * (-2 (s/R) cos theta).
 *  - Integrated intensity: scale * f2m * LP(2theta) * MD * line_weight, where
 *    LP is synth/xrd.h's pid_xrd_lp_factor (same modes and formula) and MD
 *    the March-Dollase factor averaged over the family's cos^2 data:
 *    sum_i w_i (r^2 c_i + (1 - c_i) / r)^(-3/2).
 *  - Width ("TCH-lite"): the instrument is a pseudo-Voigt with Caglioti FWHM
 *    H_i^2 = U tan^2 t + V tan t + W and mixing eta_i = eta0 + eta1 * 2theta.
 *    Sample broadening is Lorentzian: H_s = (180/pi) (K lambda / (L cos t) +
 *    4 eps tan t), K = 0.9. H_i/eta_i are split into Gaussian and Lorentzian
 *    widths (Ida, Ando & Toraya 2000), H_s is added to the Lorentzian width,
 *    and the Thompson-Cox-Hastings formulas give the total FWHM and eta. The
 *    result is rescaled so that with H_s = 0 the peak is exactly (H_i, eta_i):
 *    H = H_i * H_tch(HG, HL + H_s) / H_tch(HG, HL), eta likewise shifted.
 *  - Profile: area-normalized pseudo-Voigt eta L + (1 - eta) G with FWHM H.
 *    On a Q grid (Q = 4 pi sin(theta) / lambda_0, 1/angstrom, lambda_0 =
 *    line 0) positions come from 2theta_obs and widths from the Jacobian
 *    dQ/d(2theta); areas are kept (counts are conserved).
 *  - Impurity peaks: pseudo-Voigts at given positions with given FWHM
 *    (axis units), the instrument eta, and a height that is a fraction of the
 *    tallest single phase peak.
 *  - Background, as fractions of the tallest single phase peak h_ref (the
 *    profile maximum can exceed h_ref by overlap, e.g. up to 1.5x where the
 *    K-alpha doublet is unresolved): Chebyshev sum_k c_k T_k(xi) over xi in
 *    [-1, 1] across the grid, a Gaussian amorphous hump (height, centre,
 *    FWHM in axis units) and air scatter air * x_0 / x (its value at the
 *    first point).
 *  - Noise, with S the maximum of the noiseless signal s_j (in units of S):
 *    Gaussian sigma and Poisson counting noise with C counts at S. Where
 *    lambda = C s_j >= 20 one normal draw with variance sigma^2 + s_j / C
 *    stands for both (normal approximation to Poisson, error in the
 *    distribution below ~1 % there); below 20 the Poisson count is exact
 *    (inversion) and added to an independent Gaussian. Normals come from
 *    Box-Muller on Philox words: with nb = ceil(n / 4), block b of stream
 *    noise_stream under key noise_seed gives the normals of points b, b + nb,
 *    b + 2 nb, b + 3 nb (words 0,1 -> first two, 2,3 -> last two); the
 *    exact-Poisson uniform of point j is word j / nb of block 2^40 + j % nb.
 *    CPU and CUDA draw the same numbers.
 *  - Output: each row is divided by its maximum, so the maximum is exactly 1
 *    (a row that is zero everywhere stays zero). Values can dip below 0
 *    where Gaussian noise exceeds the signal (and by ~1e-5 of the maximum
 *    from the cubic subdivision's ringing); nothing is clipped.
 *
 * Speed: each peak is evaluated on a coarse grid of its own resolution and
 * the coarse grids are refined onto the output grid by 4-point
 * Deslauriers-Dubuc (cubic) subdivision, so a peak costs about the same
 * whatever its width. A peak has a core (|dx| <= 3.5 H, Gaussian part cut
 * at 3 H where it is 2^-36 of its top; 12 r^(1/4) samples per FWHM, at least
 * 4, r = height / tallest height) and Lorentzian wings (1.5 H <= |dx| <=
 * N H, 2-4 samples per FWHM) blended with a quintic smoothstep over
 * 1.5..3.5 H; weak or narrow peaks use one grid. The background, smooth, is
 * added on a coarse level too. Window: N = 0.5 sqrt(h_L / (2e-5 h_ref)) FWHM,
 * i.e. the Lorentzian part ends where it falls to K_XRD_TAIL_REL = 2e-5 of
 * the tallest peak h_ref, clamped to 3..60 FWHM. Each truncation leaves a
 * step of at most max(2e-5, eta / (1 + 4 * 60^2) = 6.9e-5 eta) of h_ref at
 * the window edge and drops about 1 / (pi N) of that peak's Lorentzian area
 * (0.5 % at N = 60, 10 % for the weakest peaks, whose tails are then below
 * 2e-5). Subdivision error at a peak top: about 9 / 12^4 = 4e-4 of h_ref.
 * Measured against a full-range double-precision sum (unit test: ~600
 * overlapping peaks, sizes 5-100 nm, eta 0..1): 1.05e-3 of the maximum at
 * worst (5 nm crystallites); the test bound is 2e-3.
 *
 * CUDA: one 256-thread block per pattern, the levels (about 2 n floats: 57 KB
 * for 7001 points) in shared memory, peaks computed one per thread into a
 * global scratch array, then one warp per peak with shared-memory atomics,
 * block-wide subdivision, background, noise and normalization. Writing the
 * output alone bounds it near HBM bandwidth / (4 n bytes), ~1e5 profiles/s
 * of 7001 points on an H100; not measured here (no device). */
#ifndef PID_XRD_RENDER_H
#define PID_XRD_RENDER_H

#include <stdint.h>

#include "core/hd.h"
#include "core/rng.h"
#include "core/status.h"
#include "kernels/backend.h"
#include "kernels/xrd_types.h"

#include <math.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The shared math below must inline into the CPU's vector loops (GCC will
 * not inline the larger helpers on its own) and into the CUDA kernel. */
#ifdef __CUDACC__
#define K_XRD_HD __host__ __device__ __forceinline__
#else
#define K_XRD_HD __attribute__((always_inline)) inline
#endif

#define K_XRD_MAX_PHASES 8     /* phase components per pattern */
#define K_XRD_MAX_LINES 2      /* source lines (K-alpha1, K-alpha2) */
#define K_XRD_MAX_CHEB 5       /* Chebyshev coefficients: order up to 4 */
#define K_XRD_MAX_IMPURITIES 4 /* extra peaks per pattern */
#define K_XRD_MAX_POINTS (1 << 22)

typedef enum { K_XRD_AXIS_TWO_THETA = 0, K_XRD_AXIS_Q = 1 } k_xrd_axis;
/* Same numbering as pid_lp_mode in synth/xrd.h. */
typedef enum { K_XRD_LP_LAB = 0, K_XRD_LP_SYNCHROTRON = 1, K_XRD_LP_NONE = 2 } k_xrd_lp_mode;

/* Output grid shared by a batch: x_j = x0 + j * step, j < n_points. */
typedef struct {
    int32_t axis;     /* k_xrd_axis */
    int32_t n_points; /* 2 .. K_XRD_MAX_POINTS */
    float x0;         /* first point: 2-theta deg, or Q 1/angstrom */
    float step;       /* spacing, same unit, > 0 */
} k_xrd_grid;

/* One phase component of a pattern. */
typedef struct {
    int32_t refl_offset; /* first family in the batch's k_xrd_refl array */
    int32_t refl_count;  /* families used (0 allowed) */
    /* Strained reciprocal metric, 1/angstrom^2: g11 g22 g33 g12 g13 g23, so
     * 1/d^2 = g11 h^2 + g22 k^2 + g33 l^2 + 2 (g12 h k + g13 h l + g23 k l). */
    float gstar[6];
    float scale;       /* >= 0, multiplies f2m (e.g. weight fraction / (cell mass * V)) */
    float md_r;        /* March-Dollase r > 0; 1 = random orientation */
    int32_t md_axis;   /* texture axis 0..PID_TEX_AXES-1 (see xrd_types.h) */
    float size_nm;     /* crystallite size; 0 = no size broadening */
    float microstrain; /* epsilon (0.001 = 0.1 %); 0 = none */
} k_xrd_phase;

typedef struct {
    float pos_x;  /* position, axis units */
    float height; /* fraction of the tallest phase peak, >= 0 */
    float fwhm_x; /* FWHM, axis units, > 0 */
} k_xrd_impurity;

/* Everything that defines one pattern. Plain data: copy freely. */
typedef struct {
    int32_t n_phases; /* 1..K_XRD_MAX_PHASES */
    k_xrd_phase phase[K_XRD_MAX_PHASES];
    int32_t n_lines; /* 1..K_XRD_MAX_LINES */
    float wavelength_a[K_XRD_MAX_LINES];
    float line_weight[K_XRD_MAX_LINES]; /* relative intensities, >= 0 */
    /* Instrument. */
    float cag_u_deg2, cag_v_deg2, cag_w_deg2; /* Caglioti U, V, W */
    float eta0, eta1_per_deg;                 /* eta = eta0 + eta1 * 2theta, clamped to [0, 1] */
    float zero_shift_deg;
    float displacement;          /* sample displacement s / goniometer radius R (dimensionless) */
    int32_t lp_mode;             /* k_xrd_lp_mode */
    float lp_mono_two_theta_deg; /* lab: monochromator 2-theta, 0 = none */
    float lp_polarization;       /* synchrotron: linear polarization fraction */
    /* Background, fractions of the tallest phase peak. */
    int32_t n_cheb; /* 0..K_XRD_MAX_CHEB; c0 >= sum |c_k>0| keeps it >= 0 */
    float cheb[K_XRD_MAX_CHEB];
    float hump_height, hump_center_x, hump_fwhm_x;
    float air_height; /* air scatter air * x0 / x */
    int32_t n_impurities;
    k_xrd_impurity impurity[K_XRD_MAX_IMPURITIES];
    /* Noise. */
    float noise_sigma;     /* Gaussian sigma, fraction of the noiseless maximum */
    float poisson_counts;  /* counts at the noiseless maximum; 0 = no Poisson noise */
    uint64_t noise_seed;   /* Philox key */
    uint64_t noise_stream; /* Philox stream, e.g. the pattern's index in the dataset */
} k_xrd_pattern;

/* Check a batch: grid, every pattern field (finite, in range, reflection
 * ranges inside [0, n_refl)), and that refl (host memory) holds finite data.
 * refl may be NULL to skip the reflection-content check (device memory).
 * Returns PID_ERR_ARG with a message naming the pattern and the field. */
pid_status k_xrd_render_validate(const k_xrd_grid *grid, const k_xrd_refl *refl, int n_refl,
                                 const k_xrd_pattern *pats, int n_patterns, pid_error *err);

/* Render n_patterns profiles into out (row-major n_patterns x n_points).
 * grid and pats are in host memory; refl (n_refl families) and out are in the
 * backend's memory (host for the CPU, device for CUDA). Validates first.
 * The CPU twin runs on the calling thread (parallelize over batches); the CUDA
 * twin runs one block per pattern on the backend's stream and returns when
 * the output is complete. Dispatch by pid_backend_kind(be). */
pid_status k_xrd_render(pid_backend *be, const k_xrd_grid *grid, const k_xrd_refl *refl, int n_refl,
                        const k_xrd_pattern *pats, int n_patterns, float *out, pid_error *err);
pid_status k_xrd_render_cpu(pid_backend *be, const k_xrd_grid *grid, const k_xrd_refl *refl,
                            int n_refl, const k_xrd_pattern *pats, int n_patterns, float *out,
                            pid_error *err);
pid_status k_xrd_render_cuda(pid_backend *be, const k_xrd_grid *grid, const k_xrd_refl *refl,
                             int n_refl, const k_xrd_pattern *pats, int n_patterns, float *out,
                             pid_error *err);

/* The CPU renderer's Philox4x32-10 for blocks base .. base + nb - 1 of
 * (seed, stream), word q of block b at w[q * nb + b]: the same words as
 * pid_rng_block, computed in 64-bit lanes so the 32x32->64 multiplies
 * vectorize without widening shuffles. Exposed for its test. */
void k_xrd_philox_words_cpu(uint64_t seed, uint64_t stream, uint64_t base, int nb, uint32_t *w);

/* ------------------------------------------------------------------------
 * Shared math (host and device). Everything below is used identically by the
 * CPU reference and the CUDA kernel, so the two agree to float rounding.
 * The fast functions use only +, -, *, /, sqrt and integer bit operations:
 * they vectorize on the CPU and give the same results on every x86 ISA.
 * ------------------------------------------------------------------------ */

#define K_XRD_PI 3.14159265358979f
#define K_XRD_DEG 0.0174532925199433f /* pi / 180 */
#define K_XRD_RAD 57.2957795130823f   /* 180 / pi */
#define K_XRD_SCHERRER_K 0.9f
#define K_XRD_FWHM_MIN_DEG 1e-3f /* floor for the Caglioti width */
#ifndef K_XRD_CORE_PTS
#define K_XRD_CORE_PTS 12.0f /* core samples per FWHM, at least */
#endif
#ifndef K_XRD_CORE_MIN_PTS
#define K_XRD_CORE_MIN_PTS 4.0f /* ... for the weakest peaks */
#endif
#ifndef K_XRD_WING_PTS
#define K_XRD_WING_PTS 2.0f /* wing samples per FWHM, at least */
#endif
#ifndef K_XRD_RAMP_LO
#define K_XRD_RAMP_LO 1.5f /* core/wing blend starts (FWHM) */
#endif
#ifndef K_XRD_RAMP_HI
#define K_XRD_RAMP_HI 3.5f /* ... and ends (FWHM) */
#endif
#define K_XRD_GAUSS_CUT 3.0f /* Gaussian part evaluated to 3 FWHM (2^-36 beyond) */
#ifndef K_XRD_WINDOW_MAX
#define K_XRD_WINDOW_MAX 60.0f /* longest window, FWHM either side */
#endif
#ifndef K_XRD_TAIL_REL
#define K_XRD_TAIL_REL 2e-5f /* windows end where L < this x tallest peak */
#endif
#define K_XRD_MAX_LEVELS 14             /* coarse grids: spacing step * 2^level */
#define K_XRD_POISSON_EXACT_BELOW 20.0f /* exact Poisson below this many counts */
#define K_XRD_POISSON_BLOCK0 (1ull << 40)

static K_XRD_HD float k_xrd_i2f(int32_t i)
{
#ifdef __CUDA_ARCH__
    return __int_as_float(i);
#else
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
#endif
}

static K_XRD_HD int32_t k_xrd_f2i(float f)
{
#ifdef __CUDA_ARCH__
    return __float_as_int(f);
#else
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i;
#endif
}

/* sqrt for x >= 0. On the host: inverse square root from the exponent
 * trick and three Newton steps (relative error ~2e-7), because a libm sqrtf
 * call may set errno and so blocks vectorization (-fno-math-errno cannot be
 * set per function in GCC); on the device the hardware sqrtf. */
static K_XRD_HD float k_xrd_sqrt(float x)
{
#ifdef __CUDA_ARCH__
    return sqrtf(x);
#else
    x = x > 0.0f ? x : 0.0f; /* -0.0 would overflow the integer trick */
    float y = k_xrd_i2f(0x5f3759df - (k_xrd_f2i(x) >> 1));
    float hx = 0.5f * x;
    y = y * (1.5f - hx * y * y);
    y = y * (1.5f - hx * y * y);
    y = y * (1.5f - hx * y * y);
    return x * y;
#endif
}

/* 2^x for any float x (0 below -126, clamped at 2^127). Round-to-nearest
 * split x = i + f, |f| <= 1/2, and a degree-6 fit of 2^f (relative error
 * 2e-9, so float rounding dominates: < 3e-7 measured against exp2 in the
 * test). The magic constant 1.5 * 2^23 rounds to the nearest integer
 * without floorf, which does not vectorize on baseline x86-64. */
static K_XRD_HD float k_xrd_exp2(float x)
{
    x = x < -126.0f ? -126.0f : x;
    x = x > 127.0f ? 127.0f : x;
    float r = (x + 12582912.0f) - 12582912.0f;
    float f = x - r;
    int32_t i = (int32_t)r;
    float p = 1.53375768e-4f;
    p = p * f + 1.33998604e-3f;
    p = p * f + 9.61851953e-3f;
    p = p * f + 5.55032900e-2f;
    p = p * f + 2.40226466e-1f;
    p = p * f + 6.93147206e-1f;
    p = p * f + 1.0f;
    float s = k_xrd_i2f((i + 127) << 23);
    return x <= -126.0f ? 0.0f : p * s;
}

/* e^x through 2^(x log2 e); relative error < 1e-6 for |x| <= 20. */
static K_XRD_HD float k_xrd_exp(float x)
{
    return k_xrd_exp2(x * 1.44269504f);
}

/* Natural log for finite x > 0 (normal numbers): x = m 2^e with m in
 * [sqrt(1/2), sqrt(2)), ln m = 2 atanh(z), z = (m-1)/(m+1), |z| < 0.172,
 * series to z^9 (truncation 3e-10). */
static K_XRD_HD float k_xrd_log(float x)
{
    int32_t bits = k_xrd_f2i(x);
    int32_t e = ((bits >> 23) & 0xff) - 127;
    float m = k_xrd_i2f((bits & 0x007fffff) | 0x3f800000);
    int32_t big = m > 1.41421356f;
    m = big ? 0.5f * m : m;
    e = big ? e + 1 : e;
    float z = (m - 1.0f) / (m + 1.0f);
    float z2 = z * z;
    float s = 1.0f / 9.0f;
    s = s * z2 + 1.0f / 7.0f;
    s = s * z2 + 0.2f;
    s = s * z2 + 1.0f / 3.0f;
    s = s * z2 + 1.0f;
    return 2.0f * z * s + (float)e * 0.693147181f;
}

/* x^y = 2^(y log2 x) for x > 0. */
static K_XRD_HD float k_xrd_pow(float x, float y)
{
    return k_xrd_exp2(y * k_xrd_log(x) * 1.44269504f);
}

/* sin and cos of 2 pi u for u in [0, 1] (turns): the nearest quarter turn
 * q and a remainder |phi| <= pi/4 with Taylor series to phi^11 / phi^12
 * (error < 2e-9), rotated by q. */
static K_XRD_HD void k_xrd_sincos_turn(float u, float *s_out, float *c_out)
{
    float v = 4.0f * u;
    float r = (v + 12582912.0f) - 12582912.0f;
    int32_t q = ((int32_t)r) & 3;
    float phi = (v - r) * (0.5f * K_XRD_PI);
    float p2 = phi * phi;
    float s = -2.50521084e-8f;
    s = s * p2 + 2.75573192e-6f;
    s = s * p2 - 1.98412698e-4f;
    s = s * p2 + 8.33333333e-3f;
    s = s * p2 - 1.66666667e-1f;
    s = phi + phi * p2 * s;
    float c = 2.08767570e-9f;
    c = c * p2 - 2.75573192e-7f;
    c = c * p2 + 2.48015873e-5f;
    c = c * p2 - 1.38888889e-3f;
    c = c * p2 + 4.16666667e-2f;
    c = c * p2 - 0.5f;
    c = 1.0f + p2 * c;
    float so = (q == 0) ? s : (q == 1) ? c : (q == 2) ? -s : -c;
    float co = (q == 0) ? c : (q == 1) ? -s : (q == 2) ? -c : s;
    *s_out = so;
    *c_out = co;
}

/* asin(x) for x in [0, 1] (Cephes asinf, relative error ~2.5e-7). */
static K_XRD_HD float k_xrd_asin(float x)
{
    int32_t hi = x > 0.5f;
    float z = hi ? 0.5f * (1.0f - x) : x * x;
    float w = hi ? k_xrd_sqrt(z) : x;
    float p = 4.2163199048e-2f;
    p = p * z + 2.4181311049e-2f;
    p = p * z + 4.5470025998e-2f;
    p = p * z + 7.4953002686e-2f;
    p = p * z + 1.6666752422e-1f;
    float r = w + w * z * p;
    return hi ? 0.5f * K_XRD_PI - 2.0f * r : r;
}

/* Lorentz-polarization at Bragg angle theta given sin(theta) and cos(theta):
 * the formula of pid_xrd_lp_factor (synth/xrd.c), written with selects.
 * mono_c2 = cos^2(2 theta_m) of the monochromator, 1 when there is none. */
static K_XRD_HD float k_xrd_lp(int32_t mode, float mono_c2, float polarization, float sin_t,
                               float cos_t)
{
    float c2 = 1.0f - 2.0f * sin_t * sin_t; /* cos 2theta */
    float cc = c2 * c2;
    float lorentz = 1.0f / (sin_t * sin_t * cos_t);
    float lab = mono_c2 < 1.0f ? (1.0f + cc * mono_c2) / (1.0f + mono_c2) : 1.0f + cc;
    float pol = mode == K_XRD_LP_SYNCHROTRON ? polarization + (1.0f - polarization) * cc : lab;
    return mode == K_XRD_LP_NONE ? 1.0f : pol * lorentz;
}

/* March-Dollase average over one family's cos^2 data (c2[i * stride],
 * w[i * stride]: the PID_TEX_NCOS entries of the texture axis). Exactly 1
 * for r = 1. */
static K_XRD_HD float k_xrd_march_dollase(const float *c2, const float *w, int stride, float r)
{
    float r2 = r * r, ir = 1.0f / r, acc = 0.0f;
    for (int i = 0; i < PID_TEX_NCOS; i++) {
        float ci = c2[i * stride], wi = w[i * stride];
        float x = r2 * ci + (1.0f - ci) * ir; /* > 0 for r > 0, c2 in [0, 1] */
        float t = wi / (x * k_xrd_sqrt(x));
        acc += wi > 0.0f ? t : 0.0f;
    }
    return r == 1.0f ? 1.0f : acc;
}

/* Thompson-Cox-Hastings: total FWHM^5 from Gaussian and Lorentzian FWHMs. */
static K_XRD_HD float k_xrd_tch_h5(float g, float l)
{
    float g2 = g * g, l2 = l * l;
    return g2 * g2 * g + 2.69269f * g2 * g2 * l + 2.42843f * g2 * g * l2 + 4.47163f * g2 * l2 * l +
           0.07842f * g * l2 * l2 + l2 * l2 * l;
}

static K_XRD_HD float k_xrd_tch_eta(float q)
{
    return q * (1.36603f + q * (-0.47719f + q * 0.11116f));
}

/* Instrument mixing at 2-theta (deg). */
static K_XRD_HD float k_xrd_eta_at(const k_xrd_pattern *p, float two_theta_deg)
{
    float e = p->eta0 + p->eta1_per_deg * two_theta_deg;
    e = e < 0.0f ? 0.0f : e;
    return e > 1.0f ? 1.0f : e;
}

/* cos^2(2 theta_m) of the pattern's monochromator (1 = none or not lab). */
static K_XRD_HD float k_xrd_mono_c2(const k_xrd_pattern *p)
{
    if (p->lp_mode != K_XRD_LP_LAB || !(p->lp_mono_two_theta_deg > 0.0f)) return 1.0f;
    float s, c;
    k_xrd_sincos_turn(p->lp_mono_two_theta_deg * (1.0f / 360.0f), &s, &c);
    return c * c;
}

/* Peak of one family (Miller indices h k l, f2m, texture data of the phase's
 * axis with element stride tex_stride) of phase ph for source line `line`: position x and FWHM in
 * axis units, mixing eta and integrated intensity. Straight-line code (selects, no early exit) so
 * the CPU loop over families vectorizes. Returns 0 when the reflection does not diffract (sin theta
 * >= 0.9999) or has no intensity; the outputs are then finite but meaningless. */
static K_XRD_HD int k_xrd_peak_eval(const k_xrd_grid *g, const k_xrd_pattern *p,
                                    const k_xrd_phase *ph, float h, float k, float l, float f2m,
                                    const float *tex_c2, const float *tex_w, int tex_stride,
                                    int line, float mono_c2, float *x_out, float *fwhm_out,
                                    float *eta_out, float *area_out)
{
    const float *G = ph->gstar;
    float q = G[0] * h * h + G[1] * k * k + G[2] * l * l +
              2.0f * (G[3] * h * k + G[4] * h * l + G[5] * k * l); /* 1/d^2 */
    float lam = p->wavelength_a[line];
    float s = 0.5f * lam * k_xrd_sqrt(q > 0.0f ? q : 0.0f);
    int ok = (s > 0.0f) & (s < 0.9999f);
    s = ok ? s : 0.5f;
    float c = k_xrd_sqrt(1.0f - s * s), tn = s / c;
    float tt = 2.0f * k_xrd_asin(s) * K_XRD_RAD + p->zero_shift_deg -
               2.0f * p->displacement * c * K_XRD_RAD;
    float inten = ph->scale * f2m * p->line_weight[line] *
                  k_xrd_lp(p->lp_mode, mono_c2, p->lp_polarization, s, c) *
                  k_xrd_march_dollase(tex_c2, tex_w, tex_stride, ph->md_r);
    ok = ok & (inten > 0.0f);
    /* Instrument width and mixing. */
    float hi2 = (p->cag_u_deg2 * tn + p->cag_v_deg2) * tn + p->cag_w_deg2;
    const float hmin2 = K_XRD_FWHM_MIN_DEG * K_XRD_FWHM_MIN_DEG;
    float hi = k_xrd_sqrt(hi2 > hmin2 ? hi2 : hmin2);
    float eta_i = k_xrd_eta_at(p, tt);
    /* Sample broadening (Lorentzian), deg; TCH-lite combination. */
    float size_a = 10.0f * ph->size_nm;
    float hs = (size_a > 0.0f ? K_XRD_SCHERRER_K * lam / (size_a * c) : 0.0f) +
               4.0f * ph->microstrain * tn;
    hs *= K_XRD_RAD;
    float e2 = eta_i * eta_i;
    float gr = 1.0f - 0.74417f * eta_i - 0.24781f * e2 - 0.00810f * e2 * eta_i;
    float hg = hi * k_xrd_sqrt(gr > 0.0f ? gr : 0.0f);
    float hl = hi * (0.72928f * eta_i + 0.19289f * e2 + 0.07783f * e2 * eta_i);
    float h0 = k_xrd_pow(k_xrd_tch_h5(hg, hl), 0.2f);
    float h1 = k_xrd_pow(k_xrd_tch_h5(hg, hl + hs), 0.2f);
    float eta_s = eta_i + k_xrd_tch_eta((hl + hs) / h1) - k_xrd_tch_eta(hl / h0);
    eta_s = eta_s < 0.0f ? 0.0f : (eta_s > 1.0f ? 1.0f : eta_s);
    float fwhm = hs > 0.0f ? hi * (h1 / h0) : hi;
    float eta = hs > 0.0f ? eta_s : eta_i;
    /* Q axis: Q = 4 pi sin(theta_obs) / lambda_0, width by dQ/d(2theta). */
    float so, co;
    k_xrd_sincos_turn(tt * (1.0f / 720.0f), &so, &co); /* theta_obs in turns */
    float k4 = 4.0f * K_XRD_PI / p->wavelength_a[0];
    int isq = g->axis == K_XRD_AXIS_Q;
    *x_out = isq ? k4 * so : tt;
    *fwhm_out = isq ? fwhm * K_XRD_DEG * 0.5f * k4 * co : fwhm;
    *eta_out = eta;
    *area_out = inten;
    return ok & (*fwhm_out > 0.0f);
}

/* One peak ready to draw: position and FWHM in axis units, mixing, area and
 * the pseudo-Voigt's Lorentzian and Gaussian peak heights. */
typedef struct {
    float x, fwhm, eta, area;
    float h_lor, h_gau; /* eta * 2 A / (pi H), (1 - eta) * 2 sqrt(ln 2 / pi) A / H */
} k_xrd_peak;

static K_XRD_HD void k_xrd_peak_heights(k_xrd_peak *pk)
{
    float ih = 1.0f / pk->fwhm;
    pk->h_lor = pk->eta * pk->area * (2.0f / K_XRD_PI) * ih;
    pk->h_gau = (1.0f - pk->eta) * pk->area * 0.939437279f * ih;
}

/* k_xrd_peak_eval for a k_xrd_refl, filling a k_xrd_peak. */
static K_XRD_HD int k_xrd_peak_make(const k_xrd_grid *g, const k_xrd_pattern *p,
                                    const k_xrd_phase *ph, const k_xrd_refl *rf, int line,
                                    float mono_c2, k_xrd_peak *pk)
{
    int ok = k_xrd_peak_eval(g, p, ph, rf->hkl[0], rf->hkl[1], rf->hkl[2], rf->f2m,
                             rf->tex_cos2[ph->md_axis], rf->tex_w[ph->md_axis], 1, line, mono_c2,
                             &pk->x, &pk->fwhm, &pk->eta, &pk->area);
    k_xrd_peak_heights(pk);
    return ok;
}

/* Impurity peak i, height relative to h_ref (tallest phase peak). */
static K_XRD_HD void k_xrd_impurity_make(const k_xrd_grid *g, const k_xrd_pattern *p, int i,
                                         float h_ref, k_xrd_peak *pk)
{
    const k_xrd_impurity *im = &p->impurity[i];
    float tt = im->pos_x;
    if (g->axis == K_XRD_AXIS_Q) {
        float s = im->pos_x * p->wavelength_a[0] * (1.0f / (4.0f * K_XRD_PI));
        s = s < 0.0f ? 0.0f : (s > 1.0f ? 1.0f : s);
        tt = 2.0f * k_xrd_asin(s) * K_XRD_RAD;
    }
    pk->x = im->pos_x;
    pk->fwhm = im->fwhm_x;
    pk->eta = k_xrd_eta_at(p, tt);
    /* Area that gives peak height height * h_ref. */
    float shape = pk->eta * (2.0f / K_XRD_PI) + (1.0f - pk->eta) * 0.939437279f;
    pk->area = im->height * h_ref * pk->fwhm / shape;
    k_xrd_peak_heights(pk);
}

/* floor(log2(x)) clamped to [0, max_level - 1] for x >= 0, from the
 * exponent bits (no masking: a narrowed compare would stop GCC from
 * vectorizing the caller). */
static K_XRD_HD int k_xrd_ilog2_clamp(float x, int max_level)
{
    int e = (int)((uint32_t)k_xrd_f2i(x) >> 23) - 127;
    e = e < 0 ? 0 : e;
    return e > max_level - 1 ? max_level - 1 : e;
}

/* Nearest integer / floor / ceil for |x| < 2^22 without libm (vectorizes). */
static K_XRD_HD float k_xrd_rint(float x)
{
    return (x + 12582912.0f) - 12582912.0f;
}

/* sqrt(x) for x >= 0 to about 4 %, from the exponent bits alone: enough to
 * size windows and pick levels, and much cheaper than k_xrd_sqrt in the
 * scalar per-peak code. Identical on host and device. */
static K_XRD_HD float k_xrd_sqrt_rough(float x)
{
    return k_xrd_i2f((int32_t)(((uint32_t)k_xrd_f2i(x) >> 1) + (127u << 22)));
}

/* Half-window in FWHM: where the Lorentzian part drops below tail_abs
 * (to a few %), at least GAUSS_CUT, at most WINDOW_MAX. */
static K_XRD_HD float k_xrd_window_fwhm(float h_lor, float tail_abs)
{
    float t = h_lor / tail_abs - 1.0f;
    float n = 0.5f * k_xrd_sqrt_rough(t > 0.0f ? t : 0.0f);
    n = n < K_XRD_GAUSS_CUT ? K_XRD_GAUSS_CUT : n;
    return n > K_XRD_WINDOW_MAX ? K_XRD_WINDOW_MAX : n;
}

/* Blend weight of the wing at |u| FWHM from the centre: 0 below RAMP_LO,
 * 1 above RAMP_HI, quintic smoothstep between (C2, so the coarse wing grid
 * interpolates it well). */
static K_XRD_HD float k_xrd_ramp(float au)
{
    float t = (au - K_XRD_RAMP_LO) * (1.0f / (K_XRD_RAMP_HI - K_XRD_RAMP_LO));
    t = t < 0.0f ? 0.0f : t;
    t = t > 1.0f ? 1.0f : t;
    return t * t * t * (10.0f + t * (-15.0f + 6.0f * t));
}

/* Tier kinds of a peak's plan and their per-point value at u = dx / FWHM. */
enum { K_XRD_TIER_FULL = 0, K_XRD_TIER_CORE = 1, K_XRD_TIER_WING = 2 };

/* 2^x for -36 <= x <= 0 only (the Gaussian inside its cut): no clamps,
 * degree-5 fit of 2^f (relative error 8e-8). */
static K_XRD_HD float k_xrd_exp2_gauss(float x)
{
    float r = (x + 12582912.0f) - 12582912.0f;
    float f = x - r;
    int32_t i = (int32_t)r;
    float p = 1.32669704e-3f;
    p = p * f + 9.67545975e-3f;
    p = p * f + 5.55074262e-2f;
    p = p * f + 2.40221218e-1f;
    p = p * f + 6.93146949e-1f;
    p = p * f + 1.00000007f;
    return p * k_xrd_i2f((i + 127) << 23);
}

static K_XRD_HD float k_xrd_tier_value(int kind, float h_lor, float h_gau, float u)
{
    const float cut2 = K_XRD_GAUSS_CUT * K_XRD_GAUSS_CUT;
    float u2 = u * u;
    float lor = h_lor / (1.0f + 4.0f * u2);
    float gau = u2 <= cut2 ? h_gau * k_xrd_exp2_gauss(-4.0f * (u2 < cut2 ? u2 : cut2)) : 0.0f;
    if (kind == K_XRD_TIER_FULL) return lor + gau;
    float w = k_xrd_ramp(u < 0.0f ? -u : u);
    if (kind == K_XRD_TIER_CORE) return lor * (1.0f - w) + gau;
    return lor * w;
}

/* Level sizes. Level l has spacing step * 2^l and holds coarse indices
 * -2 .. top(l) + 2 plus K_XRD_PAD slack (window lengths are rounded up to
 * multiples of K_XRD_PAD so vector loops have no remainder), with
 * top(0) = n - 1 and top(l) = ceil((n - 1) / 2^l) + 2: enough for the
 * 4-point subdivision to fill level l-1 including its margins, since
 * (top(l-1) + 2) / 2 <= top(l). A closed form, so the per-peak plan needs
 * no table lookup (which would stop it vectorizing). */
#define K_XRD_PAD 16
static K_XRD_HD int32_t k_xrd_level_top(int32_t n_points, int32_t l)
{
    int32_t n1 = n_points - 1;
    return l == 0 ? n1 : ((n1 + (1 << l) - 1) >> l) + 2;
}

/* Fills top and offsets (index of coarse k = -2) per level; returns the
 * total floats needed. */
static K_XRD_HD int k_xrd_level_layout(int n_points, int32_t top[K_XRD_MAX_LEVELS],
                                       int32_t off[K_XRD_MAX_LEVELS])
{
    int total = 0;
    for (int l = 0; l < K_XRD_MAX_LEVELS; l++) {
        top[l] = k_xrd_level_top(n_points, l);
        off[l] = total;
        total += top[l] + 5 + K_XRD_PAD;
    }
    return total;
}

/* Where a peak goes: up to two tiers, each a level, a kind and an index
 * range [k0, k1] on that level (coarse index k at x0 + k * step * 2^level;
 * empty when k1 < k0). */
typedef struct {
    int32_t level[2], kind[2], k0[2], k1[2];
} k_xrd_plan;

/* Plan a peak (centre x, FWHM, Lorentzian and Gaussian heights): one tier
 * (narrow or weak peaks: everything on one level) or a core and a wing
 * tier. The core resolution falls with the peak's height r (fraction of
 * the tallest, h_ref): the subdivision error at a peak top is about
 * 9 r / M^4 of h_ref for M samples per FWHM, so M = CORE_PTS r^(1/4) (at
 * least CORE_MIN_PTS) keeps it near 9 / CORE_PTS^4 = 4e-4 of h_ref whatever
 * r. Branch-free, so the CPU plans many peaks in one vector loop. */
static K_XRD_HD void k_xrd_peak_plan(const k_xrd_grid *g, float x, float fwhm, float h_lor,
                                     float h_gau, float h_ref, k_xrd_plan *pl)
{
    float hs = fwhm / g->step; /* FWHM in output steps */
    float nw = k_xrd_window_fwhm(h_lor, K_XRD_TAIL_REL * h_ref);
    float r = (h_lor + h_gau) / h_ref;
    r = r < 1.0f ? r : 1.0f;
    float mc = K_XRD_CORE_PTS * k_xrd_sqrt_rough(k_xrd_sqrt_rough(r));
    mc = mc > K_XRD_CORE_MIN_PTS ? mc : K_XRD_CORE_MIN_PTS;
    int lc = k_xrd_ilog2_clamp(hs / mc, K_XRD_MAX_LEVELS);
    int lw = k_xrd_ilog2_clamp(hs / K_XRD_WING_PTS, K_XRD_MAX_LEVELS);
    float c = (x - g->x0) / g->step; /* centre in output steps */
    /* Two tiers when the wing level is coarser and the window reaches past
     * the blend. Integer arithmetic, not && / ?: on comparisons, so GCC
     * keeps the loop vectorizable (mixed mask types defeat it). */
    int32_t two = ((lc - lw) >> 31) & ((k_xrd_f2i(K_XRD_RAMP_HI) - k_xrd_f2i(nw)) >> 31) & 1;
    for (int tier = 0; tier < 2; tier++) {
        int lv = tier == 0 ? lc : lw;
        float half = tier == 0 ? K_XRD_RAMP_HI * (float)two + nw * (float)(1 - two) : nw;
        float isc = k_xrd_i2f((127 - lv) << 23); /* 2^-lv */
        int32_t hi = k_xrd_level_top(g->n_points, lv) + 2;
        float fhi = (float)hi + 4.0f;
        float a = (c - half * hs) * isc, b = (c + half * hs) * isc;
        a = a < -4.0f ? -4.0f : (a > fhi ? fhi : a);
        b = b < -4.0f ? -4.0f : (b > fhi ? fhi : b);
        float ra = k_xrd_rint(a), rb = k_xrd_rint(b);
        int32_t k0 = (int32_t)(ra < a ? ra + 1.0f : ra); /* ceil */
        int32_t k1 = (int32_t)(rb > b ? rb - 1.0f : rb); /* floor */
        k0 = k0 < -2 ? -2 : k0;
        k1 = k1 > hi ? hi : k1;
        /* Round the length up to a multiple of K_XRD_PAD (into the slack). */
        int32_t len = k1 - k0 + 1;
        len = len > 0 ? (len + K_XRD_PAD - 1) & ~(K_XRD_PAD - 1) : 0;
        len = tier == 1 ? len * two : len;
        pl->level[tier] = lv;
        pl->kind[tier] = tier == 0 ? two * K_XRD_TIER_CORE : K_XRD_TIER_WING;
        pl->k0[tier] = k0;
        pl->k1[tier] = k0 + len - 1;
    }
}

/* Position of coarse index k of level lv relative to the peak (centre x,
 * FWHM fwhm), in FWHM: u = (k - kc) * du. */
static K_XRD_HD void k_xrd_tier_frame(const k_xrd_grid *g, float x, float fwhm, int lv, float *kc,
                                      float *du)
{
    float sp = g->step * k_xrd_i2f((127 + lv) << 23); /* step * 2^lv */
    *kc = (x - g->x0) / sp;
    *du = sp / fwhm;
}

/* Background of one pattern with everything per-pattern folded in, so the
 * per-point function is straight-line code (vectorizes on the CPU). It is
 * smooth, so it is evaluated on a coarse level (spacing 2^level steps) and
 * refined with the peaks: level = largest <= 4 with 2^level <= n/32, hump
 * FWHM / 8 and x0 / 8 steps (cubic subdivision error below 1e-4 of the
 * background there). */
typedef struct {
    float c[K_XRD_MAX_CHEB]; /* Chebyshev coefficients times h_ref, zero-padded */
    float xi_scale;          /* xi = j * xi_scale - 1, j = fine index */
    float x0, step;
    float hump_h, hump_c, hump_iw; /* height (times h_ref), centre, 1/FWHM (0 = off) */
    float air_h;                   /* air height times h_ref times x0 (0 = off) */
    int32_t level;
    int32_t any; /* 0: no background at all */
} k_xrd_bg;

static K_XRD_HD void k_xrd_bg_init(const k_xrd_grid *g, const k_xrd_pattern *p, float pref,
                                   k_xrd_bg *bg)
{
    for (int k = 0; k < K_XRD_MAX_CHEB; k++)
        bg->c[k] = k < p->n_cheb ? pref * p->cheb[k] : 0.0f;
    bg->xi_scale = 2.0f / (float)(g->n_points - 1);
    bg->x0 = g->x0;
    bg->step = g->step;
    int hump = p->hump_height > 0.0f;
    bg->hump_h = hump ? pref * p->hump_height : 0.0f;
    bg->hump_c = hump ? p->hump_center_x : 0.0f;
    bg->hump_iw = hump ? 1.0f / p->hump_fwhm_x : 0.0f;
    bg->air_h = p->air_height > 0.0f ? pref * p->air_height * g->x0 : 0.0f;
    bg->any = p->n_cheb > 0 || hump || p->air_height > 0.0f;
    float lim = (float)(g->n_points - 1) / 32.0f;
    float hw = p->hump_fwhm_x / g->step / 8.0f, xs = g->x0 / g->step / 8.0f;
    lim = hump && hw < lim ? hw : lim;
    lim = p->air_height > 0.0f && xs < lim ? xs : lim;
    int lv = lim >= 1.0f ? k_xrd_ilog2_clamp(lim, K_XRD_MAX_LEVELS) : 0;
    bg->level = lv > 4 ? 4 : lv;
}

/* Background at fine index j (any real j: coarse point k of the
 * background level is j = k 2^level): Chebyshev T0..T4 of xi in [-1, 1], a
 * Gaussian hump, and air scatter air * x0 / x. */
static K_XRD_HD float k_xrd_bg_at(const k_xrd_bg *bg, float j)
{
    float x = bg->x0 + j * bg->step;
    float xi = j * bg->xi_scale - 1.0f;
    float t2 = 2.0f * xi * xi - 1.0f;
    float t3 = 2.0f * xi * t2 - xi;
    float t4 = 2.0f * xi * t3 - t2;
    float b = bg->c[0] + bg->c[1] * xi + bg->c[2] * t2 + bg->c[3] * t3 + bg->c[4] * t4;
    float u = (x - bg->hump_c) * bg->hump_iw;
    b += bg->hump_h * k_xrd_exp2(-4.0f * u * u);
    float air = bg->air_h > 0.0f ? bg->air_h / x : 0.0f;
    return b + air;
}

/* Box-Muller: two standard normals from two uniform words. Noise needs
 * no more than ~1e-6 relative accuracy, so the radius uses two Newton steps
 * (5e-6) and the angle series stops at phi^7 / phi^8 (3e-7). */
static K_XRD_HD void k_xrd_box_muller(uint32_t a, uint32_t b, float *n0, float *n1)
{
    float rr = -2.0f * k_xrd_log(pid_u01f(a));
    /* A draw of exactly 1 gives -0.0, whose sign bit would overflow the
     * integer trick below; clamp (a select, so it still vectorizes). */
    rr = rr > 0.0f ? rr : 0.0f;
#ifdef __CUDA_ARCH__
    float r = sqrtf(rr);
#else
    float y = k_xrd_i2f(0x5f3759df - (k_xrd_f2i(rr) >> 1));
    y = y * (1.5f - 0.5f * rr * y * y);
    y = y * (1.5f - 0.5f * rr * y * y);
    float r = rr * y;
#endif
    float v = 4.0f * pid_u01f(b);
    float q0 = k_xrd_rint(v);
    int32_t q = ((int32_t)q0) & 3;
    float phi = (v - q0) * (0.5f * K_XRD_PI);
    float p2 = phi * phi;
    float s = phi + phi * p2 * (-1.66666667e-1f + p2 * (8.33333333e-3f + p2 * -1.98412698e-4f));
    float c =
        1.0f + p2 * (-0.5f + p2 * (4.16666667e-2f + p2 * (-1.38888889e-3f + p2 * 2.48015873e-5f)));
    float so = (q == 0) ? s : (q == 1) ? c : (q == 2) ? -s : -c;
    float co = (q == 0) ? c : (q == 1) ? -s : (q == 2) ? -c : s;
    *n0 = r * co;
    *n1 = r * so;
}

/* Noise added at one point (in signal units): Gaussian only, or the one
 * normal draw standing for Gaussian + Poisson where C s >= 20. Needs an
 * exact-Poisson draw instead (k_xrd_noise_value) when it returns 0 and
 * *exact is set. is = 1/S, ic = 1/C, s2 = sigma^2. */
static K_XRD_HD float k_xrd_noise_fast(float y, float smax, float is, float sigma, float s2,
                                       float counts, float ic, float n, int *exact)
{
    if (!(counts > 0.0f)) {
        *exact = 0;
        return smax * (sigma * n);
    }
    float s = y * is;
    s = s > 0.0f ? s : 0.0f;
    int big = counts * s >= K_XRD_POISSON_EXACT_BELOW;
    *exact = !big;
    float d = smax * (k_xrd_sqrt(s2 + s * ic) * n);
    return big ? d : 0.0f;
}

/* Exact Poisson(lam) for 0 <= lam < K_XRD_POISSON_EXACT_BELOW by inversion
 * with one uniform u in (0, 1] (capped at 96 counts; P(more) < 1e-30). */
static K_XRD_HD float k_xrd_poisson_small(float lam, float u)
{
    float p = k_xrd_exp(-lam), f = p;
    int k = 0;
    while (u > f && k < 96) {
        k++;
        p *= lam / (float)k;
        f += p;
    }
    return (float)k;
}

/* Noise (in units of S) at a point with noiseless level s (fraction of S),
 * given its normal n and the exact-Poisson uniform u (read only when
 * C * s < K_XRD_POISSON_EXACT_BELOW). */
static K_XRD_HD float k_xrd_noise_value(float sigma, float counts, float s, float n, float u)
{
    if (!(counts > 0.0f)) return sigma * n;
    s = s > 0.0f ? s : 0.0f;
    float lam = counts * s;
    if (lam >= K_XRD_POISSON_EXACT_BELOW) return k_xrd_sqrt(sigma * sigma + s / counts) * n;
    return sigma * n + (k_xrd_poisson_small(lam, u) - lam) / counts;
}

#ifdef __cplusplus
}
#endif
#endif
