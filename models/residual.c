/* Physics residual of a classification (see residual.h): peak picking on a
 * smoothed frame (by prominence), then per predicted phase the lattice scale and zero
 * shift that explain the most peak intensity with its simulated sticks. */
#include "models/residual.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "synth/xrd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define RSD_X86 1
#define RSD_TARGET(isa) __attribute__((target(isa)))
#endif

#define RSD_SCALE_STEP 0.001
/* Lattice scales are scanned every RSD_COARSE steps first, then step by step
 * around the best: a coarse step moves a stick by at most ~0.29 deg (80 deg
 * 2-theta), less than the 0.34 deg a peak's tolerance window spans, so the
 * coarse pass lands in the basin of any alignment; 2.6x fewer fits. */
#define RSD_COARSE 3
/* Non-cubic phases get the per-axis fit when the isotropic one leaves more
 * than this fraction of the peak intensity unexplained. */
#define RSD_REFINE_BELOW 0.02
/* ... and only when the one-scale fits of all predicted phases together leave
 * more than this unexplained (below it the answer cannot reach a threshold). */
#define RSD_REFINE_ABOVE 0.05
#define RAD2DEG (180.0 / M_PI)

struct rsd_table {
    int k, n_points, n_scales, n_lines;
    double x0, step, tol;
    int *n_st;    /* [k] sticks per phase (both lines) */
    int64_t *off; /* [k] offset of phase c's block in pos: n_scales x n_st[c] */
    float *pos;   /* stick positions (deg), sorted within each (phase, scale) */
    int *n_free;  /* [k] independent cell lengths: 1 cubic, 2 uniaxial, 3 lower */
    double strain_max;
    int nl;             /* source lines with sticks: stick j of line l is j nl + l */
    int *n_strong;      /* [k] reflections of the missing-reflection check */
    int **strong;       /* [k][n_strong[c]] their indices j (line 0) */
    float **strong_int; /* [k][n_strong[c]] their intensities (strongest = 100) */
    /* [k][6 n_st[c]] per stick of a phase (one reflection at one source line
     * of wavelength lambda): the terms of sin^2(theta) = lambda^2 / (4 d^2),
     * with 1/d^2 = sum_ij G*_ij h_i h_j of the unstrained cell (q0..q2 =
     * lambda^2/4 G*_ii h_i^2, q3..q5 = lambda^2/4 2 G*_ij h_i h_j for 12, 13,
     * 23), so a strain that scales the cell lengths by (sa, sb, sc) at fixed
     * angles gives sin^2(theta) = q0/sa^2 + q1/sb^2 + q2/sc^2 + q3/(sa sb) +
     * q4/(sa sc) + q5/(sb sc). By term (q_e of stick j at q[c][e n_st[c] +
     * j]) for vector loads in explained_cell; each rounded to float, as the
     * fits were tuned with. */
    double **q;
    pid_cpu_isa isa; /* vector level of explained_cell and box_mean */
};

void rsd_destroy(rsd_table *t)
{
    if (!t) return;
    free(t->n_st);
    free(t->off);
    free(t->pos);
    for (int c = 0; c < t->k; c++) { /* per-phase arrays (tables allocated zeroed) */
        if (t->strong) free(t->strong[c]);
        if (t->strong_int) free(t->strong_int[c]);
        if (t->q) free(t->q[c]);
    }
    free(t->q);
    free(t->n_free);
    free(t->strong);
    free(t->strong_int);
    free(t->n_strong);
    free(t);
}

int rsd_n_phases(const rsd_table *t)
{
    return t->k;
}

pid_cpu_isa rsd_set_cpu_isa(rsd_table *t, pid_cpu_isa max)
{
    pid_cpu_isa best = pid_cpu_isa_detect();
    t->isa = max < best ? max : best;
    return t->isa;
}

/* Zero shifts on the 0.1 deg grid the fits use: -RSD_NZ..RSD_NZ tenths. */
#define RSD_NZ ((int)(RSD_MAX_SHIFT_DEG / 0.1 + 1e-9))
/* At most this many zero shifts (explained_shifts' buffer and bit mask). */
#define RSD_SHIFTS_MAX 16

/* Scratch: smoothed frame, peak positions, heights and marks (4 n_points
 * floats), then per zero shift the peaks' tolerance windows in sin^2(theta)
 * (2 (2 RSD_NZ + 1) RSD_MAX_PEAKS doubles). */
int64_t rsd_scratch_floats(const rsd_table *t)
{
    return 4 * (int64_t)t->n_points + 1 +
           2 * (int64_t)sizeof(double) / (int64_t)sizeof(float) * (2 * RSD_NZ + 1) * RSD_MAX_PEAKS;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

pid_status rsd_phase_sticks(const pid_structure *s, double x0_deg, double step_deg, int n_points,
                            double wavelength_a, double strain_max, pid_xrd_stick **out, int *n,
                            pid_error *err)
{
    *out = NULL;
    *n = 0;
    if (n_points < 8 || !(step_deg > 0) || !isfinite(x0_deg) || !(wavelength_a > 0) ||
        !(strain_max >= 0 && strain_max <= 0.1))
        return pid_fail(err, PID_ERR_ARG, "residual: bad settings");
    const double hi = x0_deg + step_deg * (n_points - 1);
    pid_xrd_opts o;
    pid_xrd_opts_default(&o);
    /* sticks whose scaled positions can reach the grid */
    o.two_theta_min_deg = fmax(0.5, x0_deg * (1.0 - 2.0 * strain_max) - 2.0);
    o.two_theta_max_deg = fmin(179.0, hi * (1.0 + 2.0 * strain_max) + 2.0);
    o.source.n_lines = 1;
    o.source.wavelength_a[0] = wavelength_a;
    o.source.weight[0] = 1.0;
    o.min_rel_intensity = RSD_MIN_STICK / 100.0;
    return pid_xrd_sticks(s, &o, out, n, err);
}

pid_status rsd_create(rsd_table **out, const pid_structure *const *phases, int k, double x0_deg,
                      double step_deg, int n_points, int n_lines, const double wavelengths_a[2],
                      const double weights[2], double strain_max, pid_error *err)
{
    *out = NULL;
    if (k < 1) return pid_fail(err, PID_ERR_ARG, "residual: bad settings");
    rsd_phase *ph = calloc((size_t)k, sizeof *ph);
    pid_xrd_stick **st = calloc((size_t)k, sizeof *st);
    pid_status s = PID_OK;
    if (!ph || !st) {
        s = pid_fail(err, PID_ERR_NOMEM, "residual: out of memory");
        goto done;
    }
    for (int c = 0; c < k && !s; c++) {
        int n = 0;
        if ((s = rsd_phase_sticks(phases[c], x0_deg, step_deg, n_points, wavelengths_a[0],
                                  strain_max, &st[c], &n, err)))
            break;
        const pid_structure *p = phases[c];
        ph[c] = (rsd_phase){.cell = {p->a, p->b, p->c, p->alpha, p->beta, p->gamma},
                            .spacegroup = p->spacegroup_number,
                            .n = n};
        int32_t *hkl = malloc(sizeof(int32_t) * 3 * (size_t)(n > 0 ? n : 1));
        double *d = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
        float *in = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
        if (!hkl || !d || !in) {
            free(hkl);
            free(d);
            free(in);
            s = pid_fail(err, PID_ERR_NOMEM, "residual: out of memory");
            break;
        }
        for (int j = 0; j < n; j++) {
            hkl[3 * j] = st[c][j].h;
            hkl[3 * j + 1] = st[c][j].k;
            hkl[3 * j + 2] = st[c][j].l;
            d[j] = st[c][j].d_angstrom;
            in[j] = (float)st[c][j].intensity;
        }
        ph[c].hkl = hkl;
        ph[c].d = d;
        ph[c].intensity = in;
    }
    if (!s)
        s = rsd_create_from(out, ph, k, x0_deg, step_deg, n_points, n_lines, wavelengths_a, weights,
                            strain_max, err);
done:
    for (int c = 0; ph && st && c < k; c++) {
        free(st[c]);
        free((void *)ph[c].hkl);
        free((void *)ph[c].d);
        free((void *)ph[c].intensity);
    }
    free(st);
    free(ph);
    return s;
}

/* Reciprocal metric G* (1/angstrom^2) of a cell a b c alpha beta gamma. */
static int cell_gstar(const double cell[6], double gs[3][3])
{
    const double r = M_PI / 180.0;
    const double a = cell[0], b = cell[1], c = cell[2];
    const double ca = cos(cell[3] * r), cb = cos(cell[4] * r), cg = cos(cell[5] * r);
    const double g[3][3] = {{a * a, a * b * cg, a * c * cb},
                            {a * b * cg, b * b, b * c * ca},
                            {a * c * cb, b * c * ca, c * c}};
    const double det = g[0][0] * (g[1][1] * g[2][2] - g[1][2] * g[2][1]) -
                       g[0][1] * (g[1][0] * g[2][2] - g[1][2] * g[2][0]) +
                       g[0][2] * (g[1][0] * g[2][1] - g[1][1] * g[2][0]);
    if (!(det > 0) || !isfinite(det)) return 0;
    gs[0][0] = (g[1][1] * g[2][2] - g[1][2] * g[2][1]) / det;
    gs[0][1] = gs[1][0] = (g[0][2] * g[2][1] - g[0][1] * g[2][2]) / det;
    gs[0][2] = gs[2][0] = (g[0][1] * g[1][2] - g[0][2] * g[1][1]) / det;
    gs[1][1] = (g[0][0] * g[2][2] - g[0][2] * g[2][0]) / det;
    gs[1][2] = gs[2][1] = (g[0][2] * g[1][0] - g[0][0] * g[1][2]) / det;
    gs[2][2] = (g[0][0] * g[1][1] - g[0][1] * g[1][0]) / det;
    return 1;
}

pid_status rsd_create_from(rsd_table **out, const rsd_phase *phases, int k, double x0_deg,
                           double step_deg, int n_points, int n_lines,
                           const double wavelengths_a[2], const double weights[2],
                           double strain_max, pid_error *err)
{
    *out = NULL;
    if (k < 1 || n_points < 8 || !(step_deg > 0) || !isfinite(x0_deg) || n_lines < 1 ||
        n_lines > 2 || !(wavelengths_a[0] > 0) || !(strain_max >= 0 && strain_max <= 0.1))
        return pid_fail(err, PID_ERR_ARG, "residual: bad settings");
    if (2 * RSD_NZ + 1 > RSD_SHIFTS_MAX)
        return pid_fail(err, PID_ERR_INTERNAL, "residual: %d zero shifts (at most %d)",
                        2 * RSD_NZ + 1, RSD_SHIFTS_MAX);
    for (int c = 0; c < k; c++) {
        double gs[3][3];
        if (phases[c].n < 0 || (phases[c].n > 0 && (!phases[c].hkl || !phases[c].d)) ||
            phases[c].spacegroup < 1 || phases[c].spacegroup > 230 ||
            !cell_gstar(phases[c].cell, gs))
            return pid_fail(err, PID_ERR_ARG, "residual: phase %d: bad cell or sticks", c);
        for (int j = 0; j < phases[c].n; j++)
            if (!(phases[c].d[j] > 0) || !isfinite(phases[c].d[j]) ||
                (phases[c].intensity &&
                 !(phases[c].intensity[j] >= 0 && phases[c].intensity[j] <= 1000)))
                return pid_fail(err, PID_ERR_ARG, "residual: phase %d: bad d-spacing or intensity",
                                c);
    }
    rsd_table *t = calloc(1, sizeof *t);
    if (!t) return pid_fail(err, PID_ERR_NOMEM, "residual: out of memory");
    t->k = k;
    t->n_points = n_points;
    t->x0 = x0_deg;
    t->step = step_deg;
    t->tol = RSD_TOL_DEG + 0.5 * step_deg;
    int ns = (int)floor(strain_max / RSD_SCALE_STEP + 1e-9);
    t->n_scales = 2 * ns + 1;
    t->strain_max = strain_max;
    t->n_free = calloc((size_t)k, sizeof *t->n_free);
    t->n_st = calloc((size_t)k, sizeof *t->n_st);
    t->off = calloc((size_t)k, sizeof *t->off);
    t->n_strong = calloc((size_t)k, sizeof *t->n_strong);
    t->strong = calloc((size_t)k, sizeof *t->strong);
    t->strong_int = calloc((size_t)k, sizeof *t->strong_int);
    t->q = calloc((size_t)k, sizeof *t->q);
    t->isa = pid_cpu_isa_detect();
    pid_status s = PID_OK;
    if (!t->n_st || !t->off || !t->n_free || !t->n_strong || !t->strong || !t->strong_int ||
        !t->q) {
        s = pid_fail(err, PID_ERR_NOMEM, "residual: out of memory");
        goto done;
    }
    const int use2 = n_lines == 2 && weights[1] >= 0.3 * weights[0] && wavelengths_a[1] > 0;
    const int nl = use2 ? 2 : 1;
    t->nl = nl;
    int64_t total = 0;
    for (int c = 0; c < k; c++) {
        const rsd_phase *P = &phases[c];
        t->n_st[c] = P->n * nl;
        const int sg = P->spacegroup;
        t->n_free[c] = sg >= 195 ? 1 : sg >= 75 ? 2 : 3;
        t->q[c] = malloc(sizeof(double) * 6 * (size_t)(t->n_st[c] > 0 ? t->n_st[c] : 1));
        if (!t->q[c]) {
            s = pid_fail(err, PID_ERR_NOMEM, "residual: out of memory");
            goto done;
        }
        double gs[3][3];
        cell_gstar(P->cell, gs);
        for (int j = 0; j < P->n; j++) {
            const double hh[3] = {P->hkl[3 * j], P->hkl[3 * j + 1], P->hkl[3 * j + 2]};
            for (int l = 0; l < nl; l++) {
                const double l4 = 0.25 * wavelengths_a[l] * wavelengths_a[l];
                double *q = t->q[c] + j * nl + l;
                const size_t e = (size_t)t->n_st[c];
                q[0] = (float)(l4 * gs[0][0] * hh[0] * hh[0]);
                q[e] = (float)(l4 * gs[1][1] * hh[1] * hh[1]);
                q[2 * e] = (float)(l4 * gs[2][2] * hh[2] * hh[2]);
                q[3 * e] = (float)(l4 * 2.0 * gs[0][1] * hh[0] * hh[1]);
                q[4 * e] = (float)(l4 * 2.0 * gs[0][2] * hh[0] * hh[2]);
                q[5 * e] = (float)(l4 * 2.0 * gs[1][2] * hh[1] * hh[2]);
            }
        }
        int ns_c = 0;
        for (int j = 0; P->intensity && j < P->n; j++)
            ns_c += P->intensity[j] >= RSD_MISS_MIN_STICK;
        t->strong[c] = malloc(sizeof(int) * (size_t)(ns_c > 0 ? ns_c : 1));
        t->strong_int[c] = malloc(sizeof(float) * (size_t)(ns_c > 0 ? ns_c : 1));
        if (!t->strong[c] || !t->strong_int[c]) {
            s = pid_fail(err, PID_ERR_NOMEM, "residual: out of memory");
            goto done;
        }
        for (int j = 0; P->intensity && j < P->n; j++)
            if (P->intensity[j] >= RSD_MISS_MIN_STICK) {
                t->strong[c][t->n_strong[c]] = j;
                t->strong_int[c][t->n_strong[c]++] = P->intensity[j];
            }
        t->off[c] = total;
        total += (int64_t)t->n_scales * t->n_st[c];
    }
    t->pos = malloc(sizeof(float) * (size_t)(total > 0 ? total : 1));
    if (!t->pos) {
        s = pid_fail(err, PID_ERR_NOMEM, "residual: out of memory");
        goto done;
    }
    for (int c = 0; c < k; c++)
        for (int si = 0; si < t->n_scales; si++) {
            double scale = 1.0 + (si - ns) * RSD_SCALE_STEP;
            float *p = t->pos + t->off[c] + (int64_t)si * t->n_st[c];
            int m = 0;
            for (int j = 0; j < phases[c].n; j++)
                for (int l = 0; l < nl; l++) {
                    double sn = wavelengths_a[l] / (2.0 * phases[c].d[j] * scale);
                    p[m++] = sn < 1.0 ? (float)(2.0 * asin(sn) * RAD2DEG) : 1e9f;
                }
            qsort(p, (size_t)m, sizeof *p, cmp_float);
        }
done:
    if (s) {
        rsd_destroy(t);
        return s;
    }
    *out = t;
    return PID_OK;
}

/* Intensity of the peaks (x[i], h[i], sorted) explained by sorted sticks p[m]
 * moved by z; marks[i] gets 1 for each explained peak when mark != 0. */
static double explained(const float *x, const float *h, int np, const float *p, int m, double z,
                        double tol, float *marks, int mark)
{
    double sum = 0.0;
    int j = 0;
    for (int i = 0; i < np; i++) {
        double xi = x[i] - z;
        while (j < m && p[j] < xi - tol)
            j++;
        if (j < m && p[j] <= xi + tol) {
            sum += h[i];
            if (mark) marks[i] = 1.0f;
        }
    }
    return sum;
}

/* explained() for every zero shift 0.1 zi (zi = -nz..nz) at once: v[zi + nz]
 * = explained(x, h, np, p, m, 0.1 zi, tol, NULL, 0), bit for bit (the same
 * comparisons), in one walk over the sticks instead of 2 nz + 1: each peak
 * looks at the sticks within reach of any shift and notes which shifts one
 * of them falls within tol for. */
static void explained_shifts(const float *x, const float *h, int np, const float *p, int m, int nz,
                             double tol, double *v)
{
    const double reach = 0.1 * nz + tol + 1e-6; /* deg; the margin only widens the look */
    for (int zi = 0; zi <= 2 * nz; zi++)
        v[zi] = 0.0;
    int j0 = 0;
    for (int i = 0; i < np; i++) {
        while (j0 < m && p[j0] < x[i] - reach)
            j0++;
        double lo[RSD_SHIFTS_MAX], hi[RSD_SHIFTS_MAX]; /* peak i's window per shift */
        for (int zi = -nz; zi <= nz; zi++) {
            double xi = x[i] - 0.1 * zi;
            lo[zi + nz] = xi - tol;
            hi[zi + nz] = xi + tol;
        }
        unsigned hit = 0;
        for (int j = j0; j < m && p[j] <= x[i] + reach; j++)
            for (int w = 0; w <= 2 * nz; w++)
                if (p[j] >= lo[w] && p[j] <= hi[w]) hit |= 1u << w;
        for (int zi = 0; hit; zi++, hit >>= 1)
            if (hit & 1u) v[zi] += h[i];
    }
}

/* Tolerance windows of the peaks x[np] (sorted) for zero shift z, in
 * sin^2(theta): a stick at 2-theta p explains peak i when |x_i - z - p| <=
 * tol, i.e. when lo[i] <= sin^2(p / 2) <= hi[i]. Both bounds increase with
 * i. So the per-axis fit compares sin^2(theta) = lambda^2 / 4d^2, a sum of
 * products, and needs neither an asin nor a square root per stick (the asin
 * was a third of the residual check's time on mixtures, the square root's
 * latency then a third of this fit's). */
static void sin2_windows(const rsd_table *t, const float *x, int np, double z, double *lo,
                         double *hi)
{
    const double half = 0.5 / RAD2DEG;
    for (int i = 0; i < np; i++) {
        double a = (x[i] - z - t->tol) * half, b = (x[i] - z + t->tol) * half;
        double sa = a <= 0.0 ? 0.0 : a >= 0.5 * M_PI ? 1.0 : sin(a);
        double sb = b <= 0.0 ? 0.0 : b >= 0.5 * M_PI ? 1.0 : sin(b);
        lo[i] = sa * sa;
        hi[i] = sb * sb;
    }
    /* up to a whole vector of 8: windows that hold nothing (explained_cell) */
    for (int i = np; i < ((np + 7) & ~7); i++) {
        lo[i] = INFINITY;
        hi[i] = -INFINITY;
    }
}

/* The factors of q0..q5 in sin^2(theta) (rsd_table.q) at cell-length scales
 * sc3: 1/sa^2, 1/sb^2, 1/sc^2, 1/(sa sb), 1/(sa sc), 1/(sb sc). */
static void cell_inverses(const double sc3[3], double iv[6])
{
    iv[0] = 1.0 / (sc3[0] * sc3[0]);
    iv[1] = 1.0 / (sc3[1] * sc3[1]);
    iv[2] = 1.0 / (sc3[2] * sc3[2]);
    iv[3] = 1.0 / (sc3[0] * sc3[1]);
    iv[4] = 1.0 / (sc3[0] * sc3[2]);
    iv[5] = 1.0 / (sc3[1] * sc3[2]);
}

/* sin^2(theta) of stick j of phase c at the cell of cell_inverses' iv. */
static inline double stick_s2(const rsd_table *t, int c, int j, const double iv[6])
{
    const double *q = t->q[c] + j;
    const size_t e = (size_t)t->n_st[c];
    return q[0] * iv[0] + q[e] * iv[1] + q[2 * e] * iv[2] + q[3 * e] * iv[3] + q[4 * e] * iv[4] +
           q[5 * e] * iv[5];
}

/* Points box_mean and the peak picking take at a time (stack buffers). */
#define RSD_BLOCK 256

/* dst[j] = mean of src over [j - hb, j + hb] within [0, n), summed in
 * double. Each point's sum is taken afresh, a block at a time, so the
 * loops vectorize; a running sum (add the entering point, drop the leaving
 * one) is one long chain of dependent additions and was a quarter of this
 * check's own time. Compiled for each vector level (box_mean); additions
 * and one product per point, so every level gives the same values. */
static inline __attribute__((always_inline)) void box_mean_body(const float *src, float *dst, int n,
                                                                int hb)
{
    const double inv = 1.0 / (2 * hb + 1);
    double acc[RSD_BLOCK];
    for (int j0 = 0; j0 < n; j0 += RSD_BLOCK) {
        const int m = n - j0 < RSD_BLOCK ? n - j0 : RSD_BLOCK;
        /* points i of the block whose window is whole: in_lo <= i < in_hi */
        const int in_lo = hb - j0 > 0 ? (hb - j0 < m ? hb - j0 : m) : 0;
        const int in_hi = n - hb - j0 < m ? (n - hb - j0 > in_lo ? n - hb - j0 : in_lo) : m;
        for (int i = in_lo; i < in_hi; i++)
            acc[i] = 0.0;
        for (int d = -hb; d <= hb; d++) {
            const float *s = src + j0 + d;
            for (int i = in_lo; i < in_hi; i++)
                acc[i] += s[i];
        }
        for (int i = in_lo; i < in_hi; i++)
            dst[j0 + i] = (float)(acc[i] * inv);
        for (int i = 0; i < m; i++) { /* near either end: the window is cut */
            if (i == in_lo) i = in_hi;
            if (i >= m) break;
            const int j = j0 + i, lo = j - hb < 0 ? 0 : j - hb,
                      hi = j + hb > n - 1 ? n - 1 : j + hb;
            double sum = 0.0;
            for (int k = lo; k <= hi; k++)
                sum += src[k];
            dst[j] = (float)(sum / (hi - lo + 1));
        }
    }
}

#ifdef RSD_X86
RSD_TARGET("avx512f")
static void box_mean_avx512(const float *src, float *dst, int n, int hb)
{
    box_mean_body(src, dst, n, hb);
}
RSD_TARGET("avx2")
static void box_mean_avx2(const float *src, float *dst, int n, int hb)
{
    box_mean_body(src, dst, n, hb);
}
#endif

static void box_mean(const rsd_table *t, const float *src, float *dst, int n, int hb)
{
#ifdef RSD_X86
    if (t->isa >= PID_CPU_ISA_AVX512) {
        box_mean_avx512(src, dst, n, hb);
        return;
    }
    if (t->isa >= PID_CPU_ISA_AVX2) {
        box_mean_avx2(src, dst, n, hb);
        return;
    }
#endif
    box_mean_body(src, dst, n, hb);
}

/* Prominence of the smoothed frame sm[n] at point j: its height over the
 * higher of the lowest points within wp points either side. */
static inline float prominence_at(const float *sm, int n, int j, int wp)
{
    float ml = sm[j], mr = sm[j];
    for (int d = 1; d <= wp; d++) {
        if (j - d >= 0 && sm[j - d] < ml) ml = sm[j - d];
        if (j + d < n && sm[j + d] < mr) mr = sm[j + d];
    }
    return sm[j] - (ml > mr ? ml : mr);
}

#ifdef RSD_X86
/* Sticks explained_cell takes at a time (its stack buffer). */
#define RSD_CHUNK 256

/* sin^2(theta) of sticks j0..j0+m-1 of phase c at the cell of iv, exactly
 * as stick_s2 gives it (the same products summed in the same order);
 * values no window can hold (<= 0, >= 1, NaN) become -1, below every
 * window (lo >= 0). */
static void chunk_s2(const rsd_table *t, int c, int j0, int m, const double iv[6], double *s2)
{
    const int64_t n = t->n_st[c];
    const double *q0 = t->q[c] + j0, *q1 = q0 + n, *q2 = q1 + n, *q3 = q2 + n, *q4 = q3 + n,
                 *q5 = q4 + n;
    for (int j = 0; j < m; j++) {
        double v = q0[j] * iv[0] + q1[j] * iv[1] + q2[j] * iv[2] + q3[j] * iv[3] + q4[j] * iv[4] +
                   q5[j] * iv[5];
        s2[j] = v > 0.0 && v < 1.0 ? v : -1.0;
    }
}

/* For each shift w, bit i of bits[w] is set when some s2[j] (j < m) lies in
 * [lo[w][i], hi[w][i]]; np <= 64, windows padded to a multiple of 8
 * (sin2_windows). Compares only, so every vector level finds the same bits. */
RSD_TARGET("avx512f")
static void hits_avx512(const double *s2, int m, const double *const *lo, const double *const *hi,
                        int nw, int np, uint64_t *bits)
{
    const int nb = (np + 7) >> 3;
    for (int w = 0; w < nw; w++)
        for (int b = 0; b < nb; b++) {
            const __m512d l = _mm512_loadu_pd(lo[w] + 8 * b), h = _mm512_loadu_pd(hi[w] + 8 * b);
            __mmask8 k = 0;
            for (int j = 0; j < m; j++) {
                const __m512d v = _mm512_set1_pd(s2[j]);
                k |=
                    _mm512_mask_cmp_pd_mask(_mm512_cmp_pd_mask(l, v, _CMP_LE_OQ), h, v, _CMP_GE_OQ);
            }
            bits[w] |= (uint64_t)k << (8 * b);
        }
}

RSD_TARGET("avx2")
static void hits_avx2(const double *s2, int m, const double *const *lo, const double *const *hi,
                      int nw, int np, uint64_t *bits)
{
    const int nb = (np + 3) >> 2;
    for (int w = 0; w < nw; w++)
        for (int b = 0; b < nb; b++) {
            const __m256d l = _mm256_loadu_pd(lo[w] + 4 * b), h = _mm256_loadu_pd(hi[w] + 4 * b);
            __m256d k = _mm256_setzero_pd();
            for (int j = 0; j < m; j++) {
                const __m256d v = _mm256_set1_pd(s2[j]);
                k = _mm256_or_pd(k, _mm256_and_pd(_mm256_cmp_pd(l, v, _CMP_LE_OQ),
                                                  _mm256_cmp_pd(h, v, _CMP_GE_OQ)));
            }
            bits[w] |= (uint64_t)_mm256_movemask_pd(k) << (4 * b);
        }
}
#endif

/* Explained intensity v[w] of peaks (h: np, sorted by position) by the
 * sticks of phase c for cell-length scales sc3[3], for nw (<= 3) zero shifts
 * at once: lo[w]/hi[w] are the peaks' sin^2(theta) windows for shift w
 * (sin2_windows). Each stick marks the peaks whose window holds it in mk[w]
 * (reset here).
 *
 * With AVX2 or AVX-512 and at most 64 peaks (the usual case: ~10 on
 * mixtures), every stick is compared with every window at once, branch
 * free, into a bit mask per shift. Otherwise the sticks, which come nearly
 * in order of angle (sorted at the unstrained cell; a strain of a few %
 * reorders few), walk the windows from the previous stick's first one.
 * Both give the same marks: a peak is marked when lo <= s2 <= hi for some
 * stick. On the built-in model's mixtures (AMD EPYC, perf) the walk, with
 * its data-dependent branches, was half of the residual check's time. */
static void explained_cell(const rsd_table *t, int c, const double *const *lo,
                           const double *const *hi, int nw, const float *h, int np,
                           const double sc3[3], uint8_t (*mk)[RSD_MAX_PEAKS], double *v)
{
    double iv[6];
    cell_inverses(sc3, iv);
#ifdef RSD_X86
    if (np <= 64 && t->isa >= PID_CPU_ISA_AVX2) {
        const int mc = t->n_st[c];
        uint64_t bits[3] = {0, 0, 0};
        double s2[RSD_CHUNK];
        for (int j0 = 0; j0 < mc; j0 += RSD_CHUNK) {
            const int m = mc - j0 < RSD_CHUNK ? mc - j0 : RSD_CHUNK;
            chunk_s2(t, c, j0, m, iv, s2);
            if (t->isa >= PID_CPU_ISA_AVX512)
                hits_avx512(s2, m, lo, hi, nw, np, bits);
            else
                hits_avx2(s2, m, lo, hi, nw, np, bits);
        }
        for (int w = 0; w < nw; w++) {
            double sum = 0.0;
            for (int i = 0; i < np; i++) {
                mk[w][i] = (uint8_t)(bits[w] >> i & 1u);
                if (mk[w][i]) sum += h[i];
            }
            v[w] = sum;
        }
        return;
    }
#endif
    for (int w = 0; w < nw; w++)
        memset(mk[w], 0, (size_t)np);
    int at[3] = {0, 0, 0}; /* per shift: first peak whose window reaches the last stick */
    for (int j = 0; j < t->n_st[c]; j++) {
        double s2 = stick_s2(t, c, j, iv);
        if (!(s2 > 0.0) || s2 >= 1.0) continue;
        for (int w = 0; w < nw; w++) {
            const double *hs = hi[w], *ls = lo[w];
            int a = at[w];
            while (a < np && hs[a] < s2)
                a++;
            while (a > 0 && hs[a - 1] >= s2)
                a--;
            at[w] = a;
            for (int i = a; i < np && ls[i] <= s2; i++)
                mk[w][i] = 1;
        }
    }
    for (int w = 0; w < nw; w++) {
        double sum = 0.0;
        for (int i = 0; i < np; i++)
            if (mk[w][i]) sum += h[i];
        v[w] = sum;
    }
}

/* Per-axis refinement for non-cubic phases: starting from the isotropic
 * best (s0, z0), coordinate descent over each independent cell length
 * (scales 1 +- strain_max by RSD_SCALE_STEP) and the zero shift (+-0.1 deg
 * around the current), two rounds; marks the peaks the best cell explains. */
static void refine(const rsd_table *t, int c, const double *win, const float *h, int np, double s0,
                   double z0, float *marks, double cell_out[3], double *z_out)
{
    uint8_t mk[3][RSD_MAX_PEAKS], best_mk[RSD_MAX_PEAKS];
    double p[3] = {1.0 + s0, 1.0 + s0, 1.0 + s0}, z = z0;
    const int nf = t->n_free[c];
    const int ns = (t->n_scales - 1) / 2;
    double sc3[3];
#define CELL_OF(pp)                                                                                \
    do {                                                                                           \
        sc3[0] = (pp)[0];                                                                          \
        sc3[1] = nf == 3 ? (pp)[1] : (pp)[0];                                                      \
        sc3[2] = nf == 1 ? (pp)[0] : nf == 2 ? (pp)[1] : (pp)[2];                                  \
    } while (0)
    CELL_OF(p);
/* the sin^2(theta) windows of zero shift zz (a multiple of 0.1 deg within the range) */
#define WIN_LO(zz) (win + (size_t)(2 * (lround((zz) / 0.1) + RSD_NZ)) * RSD_MAX_PEAKS)
#define WIN_HI(zz) (WIN_LO(zz) + RSD_MAX_PEAKS)
    const double *wlo[3] = {WIN_LO(z)}, *whi[3] = {WIN_HI(z)};
    double best, vz[3];
    explained_cell(t, c, wlo, whi, 1, h, np, sc3, mk, &best);
    memcpy(best_mk, mk[0], (size_t)np);
    for (int round = 0; round < 2; round++)
        for (int a = 0; a < nf; a++) {
            double keep = p[a], bz = z, bp = p[a];
            /* every RSD_COARSE-th scale, then the fine steps around the best */
            int bsi = (int)lround((keep - 1.0) / RSD_SCALE_STEP);
            for (int stage = 0; stage < 2; stage++) {
                const int lo = stage ? bsi - RSD_COARSE + 1 : -ns,
                          hi = stage ? bsi + RSD_COARSE - 1 : ns, inc = stage ? 1 : RSD_COARSE;
                const int cbsi = bsi;
                for (int si = lo < -ns ? -ns : lo; si <= hi && si <= ns; si += inc) {
                    if (stage && (si - cbsi) % RSD_COARSE == 0 && si != cbsi) continue;
                    p[a] = 1.0 + si * RSD_SCALE_STEP;
                    CELL_OF(p);
                    /* the shifts z - 0.1, z, z + 0.1 within the range, in one pass */
                    double zs[3];
                    int nw = 0;
                    for (int dz = -1; dz <= 1; dz++) {
                        double zz = z + 0.1 * dz;
                        if (fabs(zz) > RSD_MAX_SHIFT_DEG + 1e-9) continue;
                        zs[nw] = zz;
                        wlo[nw] = WIN_LO(zz);
                        whi[nw] = WIN_HI(zz);
                        nw++;
                    }
                    explained_cell(t, c, wlo, whi, nw, h, np, sc3, mk, vz);
                    for (int w = 0; w < nw; w++)
                        if (vz[w] > best) {
                            best = vz[w];
                            bp = p[a];
                            bz = zs[w];
                            bsi = si;
                            memcpy(best_mk, mk[w], (size_t)np);
                        }
                }
            }
            p[a] = bp == keep ? keep : bp;
            z = bz;
        }
    CELL_OF(p);
    memcpy(cell_out, sc3, sizeof sc3);
    *z_out = z;
#undef CELL_OF
#undef WIN_LO
#undef WIN_HI
    for (int i = 0; i < np; i++)
        if (best_mk[i]) marks[i] = 1.0f;
}

/* Prominence of the smoothed frame sm[n] over 2-theta [xa, xb] (deg): its
 * highest point there over the higher of the lowest points within 1 deg
 * either side of that point; -1 when the range is off the grid. */
static double prominence_in(const rsd_table *t, const float *sm, double xa, double xb)
{
    const int n = t->n_points;
    int a = (int)ceil((xa - t->x0) / t->step), b = (int)floor((xb - t->x0) / t->step);
    if (a < 0 || b >= n || a > b) return -1.0;
    int jm = a;
    for (int j = a + 1; j <= b; j++)
        if (sm[j] > sm[jm]) jm = j;
    return prominence_at(sm, n, jm, (int)ceil(1.0 / t->step));
}

/* The missing-reflection side for phase c at its fitted cell-length scales
 * sc3 and zero shift z, on the smoothed frame sm: its strong reflections
 * (line 0) are grouped where they lie within 2 tol of each other (one
 * observed peak holds them all) and each group's prominence is measured
 * over its span +- tol. The phase's scale is its best-seen group's
 * prominence per unit intensity; a group whose prominence is below
 * RSD_MISS_FRAC of scale x intensity counts as missing (a texture that
 * weakens a reflection 20-fold is still seen). Returns the missing
 * intensity fraction; 0 with fewer than two groups on the grid. */
static double missing_of(const rsd_table *t, int c, const double sc3[3], double z, const float *sm)
{
    /* the first 64 strong reflections in 2-theta order (the built-in phases
     * have at most 18 on the 10-80 deg grid) */
    enum { MAXS = 64 };
    const int ns = t->n_strong[c] < MAXS ? t->n_strong[c] : MAXS;
    double pos[MAXS], in[MAXS], iv[6];
    cell_inverses(sc3, iv);
    int m = 0;
    for (int s = 0; s < ns; s++) {
        double s2 = stick_s2(t, c, t->strong[c][s] * t->nl, iv);
        if (!(s2 > 0.0) || s2 >= 1.0) continue;
        /* insertion by position (a strain reorders few) */
        double x = 2.0 * asin(sqrt(s2)) * RAD2DEG + z;
        int i = m++;
        while (i > 0 && pos[i - 1] > x) {
            pos[i] = pos[i - 1];
            in[i] = in[i - 1];
            i--;
        }
        pos[i] = x;
        in[i] = t->strong_int[c][s];
    }
    double gp[MAXS], gi[MAXS], scale = 0.0;
    int ng = 0;
    for (int i = 0; i < m;) {
        int j = i + 1;
        double sum = in[i];
        while (j < m && pos[j] - pos[j - 1] <= 2.0 * t->tol)
            sum += in[j++];
        double p = prominence_in(t, sm, pos[i] - t->tol, pos[j - 1] + t->tol);
        if (p >= 0.0) {
            gp[ng] = p;
            gi[ng] = sum;
            if (p / sum > scale) scale = p / sum;
            ng++;
        }
        i = j;
    }
    if (ng < 2 || !(scale > 0.0)) return 0.0;
    double tot = 0.0, miss = 0.0;
    for (int g = 0; g < ng; g++) {
        tot += gi[g];
        if (gp[g] < RSD_MISS_FRAC * scale * gi[g]) miss += gi[g];
    }
    return miss / tot;
}

double rsd_unexplained(const rsd_table *t, const float *frame, const uint8_t *present,
                       float *scratch)
{
    rsd_result r;
    rsd_check(t, frame, present, scratch, &r);
    return r.unexplained;
}

void rsd_check(const rsd_table *t, const float *frame, const uint8_t *present, float *scratch,
               rsd_result *out)
{
    out->unexplained = out->missing = 0.0;
    const int n = t->n_points;
    float *sm = scratch, *x = scratch + n, *h = scratch + 2 * n, *marks = scratch + 3 * n;
    /* smooth (two passes of a ~0.1 deg box) so noise on broad peaks does not
     * split them (x[] is temporary storage here). No background removal is
     * needed: a peak's weight is its prominence over the local minima, which
     * a smooth background does not change. */
    const int hb = (int)ceil(0.05 / t->step);
    box_mean(t, frame, x, n, hb);
    box_mean(t, x, sm, n, hb);
    /* local maxima within +-RSD_TOL_DEG and their prominence (height above
     * the higher of the lowest points within 1 deg either side); kept when
     * it is at least RSD_MIN_PEAK of the largest prominence. A block of
     * points at a time, the nearest neighbours are compared first with no
     * branch (on a slope one of them is higher, so few points remain); the
     * branches of a point-by-point test were a third of this check's own
     * time. */
    const int w = (int)ceil(RSD_TOL_DEG / t->step), wp = (int)ceil(1.0 / t->step);
    int nc = 0;
    float pmax = 0.0f;
    for (int j0 = 0; j0 < n && nc < RSD_MAX_PEAKS; j0 += RSD_BLOCK) {
        const int jn = n - j0 < RSD_BLOCK ? n : j0 + RSD_BLOCK;
        int32_t cand[RSD_BLOCK];
        /* ties: the first one is the maximum */
        for (int j = j0; j < jn; j++)
            cand[j - j0] = (j == 0 || !(sm[j - 1] >= sm[j])) & (j == n - 1 || !(sm[j + 1] > sm[j]));
        for (int j = j0; j < jn && nc < RSD_MAX_PEAKS; j++) {
            if (!cand[j - j0]) continue;
            const float v = sm[j];
            int is_max = 1;
            for (int a = 2; a <= w && is_max; a++) {
                if (j - a >= 0 && sm[j - a] >= v) is_max = 0;
                if (j + a < n && sm[j + a] > v) is_max = 0;
            }
            if (!is_max) continue;
            float prom = prominence_at(sm, n, j, wp);
            if (!(prom > 0.0f)) continue;
            x[nc] = (float)(t->x0 + t->step * j);
            h[nc] = prom;
            if (prom > pmax) pmax = prom;
            nc++;
        }
    }
    if (!(pmax > 0.0f)) return;
    int np = 0;
    double total = 0.0;
    for (int i = 0; i < nc; i++)
        if (h[i] >= RSD_MIN_PEAK * pmax) {
            x[np] = x[i];
            h[np] = h[i];
            marks[np] = 0.0f;
            total += h[np];
            np++;
        }
    if (np == 0) return;
    const int ns = (t->n_scales - 1) / 2;
    const int nz = RSD_NZ;
    /* sin^2(theta) windows for the per-axis fits, after the 4 n floats (the
     * +1 float of rsd_scratch_floats leaves room to align to a double) */
    double *win = (double *)(((uintptr_t)(scratch + 4 * n) + sizeof(double) - 1) &
                             ~(uintptr_t)(sizeof(double) - 1));
    int have_win = 0;
    /* Pass 1: one lattice scale per phase (precomputed sticks). Pass 2, only
     * when that leaves more than RSD_REFINE_ABOVE unexplained: non-cubic
     * phases get their per-axis fit. Cheap frames stay cheap. */
    double ex = 0.0;
    /* the missing-reflection side looks at a phase reported alone: its
     * fitted cell and zero shift */
    int n_present = 0, last = -1;
    for (int c = 0; c < t->k; c++)
        n_present += present[c] != 0;
    double fit_cell[3] = {1.0, 1.0, 1.0}, fit_z = 0.0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < np; i++)
            marks[i] = 0.0f;
        for (int c = 0; c < t->k; c++) {
            if (!present[c] || t->n_st[c] == 0) continue;
            last = c;
            double best = -1.0;
            int bs = ns, bz = 0;
            /* every RSD_COARSE-th scale (from the unstrained cell), then the
             * fine steps around the best */
            for (int stage = 0; stage < 2; stage++) {
                const int cbs = bs;
                const int lo = stage ? cbs - RSD_COARSE + 1 : ns % RSD_COARSE,
                          hi = stage ? cbs + RSD_COARSE - 1 : t->n_scales - 1,
                          inc = stage ? 1 : RSD_COARSE;
                for (int si = lo < 0 ? 0 : lo; si <= hi && si < t->n_scales; si += inc) {
                    if (stage && si == cbs) continue;
                    const float *p = t->pos + t->off[c] + (int64_t)si * t->n_st[c];
                    double v[RSD_SHIFTS_MAX]; /* 2 RSD_NZ + 1 used (rsd_create checks) */
                    explained_shifts(x, h, np, p, t->n_st[c], nz, t->tol, v);
                    for (int zi = -nz; zi <= nz; zi++)
                        if (v[zi + nz] > best) {
                            best = v[zi + nz];
                            bs = si;
                            bz = zi;
                        }
                }
            }
            if (pass == 1 && t->n_free[c] > 1 && best < total * (1.0 - RSD_REFINE_BELOW)) {
                if (!have_win) {
                    for (int zi = -nz; zi <= nz; zi++) {
                        double *lo = win + (size_t)(2 * (zi + nz)) * RSD_MAX_PEAKS;
                        sin2_windows(t, x, np, 0.1 * zi, lo, lo + RSD_MAX_PEAKS);
                    }
                    have_win = 1;
                }
                double cell[3], z;
                refine(t, c, win, h, np, (bs - ns) * RSD_SCALE_STEP, 0.1 * bz, marks, cell, &z);
                memcpy(fit_cell, cell, sizeof cell);
                fit_z = z;
            } else {
                explained(x, h, np, t->pos + t->off[c] + (int64_t)bs * t->n_st[c], t->n_st[c],
                          0.1 * bz, t->tol, marks, 1);
                const double sc = 1.0 + (bs - ns) * RSD_SCALE_STEP;
                fit_cell[0] = fit_cell[1] = fit_cell[2] = sc;
                fit_z = 0.1 * bz;
            }
        }
        ex = 0.0;
        for (int i = 0; i < np; i++)
            ex += marks[i] * h[i];
        if (1.0 - ex / total <= RSD_REFINE_ABOVE) break;
    }
    double r = 1.0 - ex / total;
    out->unexplained = r < 0.0 ? 0.0 : r;
    /* With several phases reported, one phase's reflection can sit on
     * another's shoulder, which prominence does not see: no verdict. */
    if (n_present == 1 && last >= 0) out->missing = missing_of(t, last, fit_cell, fit_z, sm);
}
