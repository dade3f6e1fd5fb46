/* Near twins among phases (see twins.h). */
#include "models/twins.h"

#include "models/residual.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RAD2DEG (180.0 / M_PI)
#define N_COARSE 25
#define N_FINE 21
#define FINE_HALF 0.005

/* 0: not compared (monoclinic, triclinic); else the family. */
static int family(int sg)
{
    return sg >= 195 ? 4 : sg >= 143 ? 3 : sg >= 75 ? 2 : sg >= 16 ? 1 : 0;
}

/* L2-normalized Gaussian-broadened pattern of phase P with cell lengths
 * a, b, c (angles of P's cell; orthogonal axes, or gamma = 120) into y. */
static void profile(const twin_phase *P, double a, double b, double c, double x0, double step,
                    int np, double lambda, double sigma, double *y)
{
    memset(y, 0, sizeof(double) * (size_t)np);
    const int hex = fabs(P->cell[5] - 120.0) < 0.5;
    const int half = (int)ceil(5.0 * sigma / step);
    for (int j = 0; j < P->n; j++) {
        const double h = P->hkl[3 * j], k = P->hkl[3 * j + 1], l = P->hkl[3 * j + 2];
        double inv_d2 = hex ? 4.0 / 3.0 * (h * h + h * k + k * k) / (a * a) + l * l / (c * c)
                            : h * h / (a * a) + k * k / (b * b) + l * l / (c * c);
        double s = 0.5 * lambda * sqrt(inv_d2);
        if (!(s < 1.0) || !(P->intensity[j] > 0.0f)) continue;
        double tt = 2.0 * asin(s) * RAD2DEG;
        int i0 = (int)lround((tt - x0) / step);
        for (int i = i0 - half; i <= i0 + half; i++) {
            if (i < 0 || i >= np) continue;
            double u = (x0 + step * i - tt) / sigma;
            y[i] += P->intensity[j] * exp(-0.5 * u * u);
        }
    }
    double nrm = 0.0;
    for (int i = 0; i < np; i++)
        nrm += y[i] * y[i];
    nrm = sqrt(nrm);
    if (nrm > 0)
        for (int i = 0; i < np; i++)
            y[i] /= nrm;
}

static double dot(const double *a, const double *b, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

pid_status twins_find(const twin_phase *phases, int k, double x0_deg, double step_deg, int n_points,
                      double wavelength_a, double strain_max, double min_cos, int32_t **pairs,
                      float **cosines, int *n_pairs, pid_error *err)
{
    *pairs = NULL;
    *cosines = NULL;
    *n_pairs = 0;
    if (k < 0 || n_points < 8 || !(step_deg > 0) || !isfinite(x0_deg) || !(wavelength_a > 0) ||
        !(strain_max >= 0 && strain_max < 0.2) || !(min_cos > 0 && min_cos <= 1))
        return pid_fail(err, PID_ERR_ARG, "twins: bad settings");
    for (int c = 0; c < k; c++) {
        const twin_phase *P = &phases[c];
        if (P->spacegroup < 1 || P->spacegroup > 230 || P->n < 0 ||
            (P->n > 0 && (!P->hkl || !P->intensity)))
            return pid_fail(err, PID_ERR_ARG, "twins: phase %d: bad space group or sticks", c);
        for (int i = 0; i < 6; i++)
            if (!(P->cell[i] > 0) || !isfinite(P->cell[i]))
                return pid_fail(err, PID_ERR_ARG, "twins: phase %d: bad cell", c);
    }
    const double sigma = TWIN_FWHM_DEG / (2.0 * sqrt(2.0 * log(2.0)));
    const double lim = (1.0 + strain_max) / (1.0 - strain_max);
    double *ya = malloc(sizeof(double) * (size_t)n_points);
    double *yb = malloc(sizeof(double) * (size_t)n_points);
    int cap = 0, n = 0;
    int32_t *pr = NULL;
    float *cs = NULL;
    pid_status st = PID_OK;
    if (!ya || !yb) {
        st = pid_fail(err, PID_ERR_NOMEM, "twins: out of memory");
        goto done;
    }
    for (int i = 0; i < k; i++) {
        const twin_phase *A = &phases[i];
        const int fa = family(A->spacegroup);
        if (!fa || A->n == 0) continue;
        int have_a = 0;
        for (int j = i + 1; j < k; j++) {
            const twin_phase *B = &phases[j];
            if (family(B->spacegroup) != fa || B->n == 0) continue;
            int close = 1;
            for (int q = 0; q < 3 && close; q++) {
                double r =
                    A->cell[q] > B->cell[q] ? A->cell[q] / B->cell[q] : B->cell[q] / A->cell[q];
                close = r <= lim && fabs(A->cell[q + 3] - B->cell[q + 3]) <= 0.5;
            }
            if (!close) continue;
            if (!have_a) {
                profile(A, A->cell[0], A->cell[1], A->cell[2], x0_deg, step_deg, n_points,
                        wavelength_a, sigma, ya);
                have_a = 1;
            }
            const int cubic = fa == 4, uni = fa == 2 || fa == 3;
            const double *cb = B->cell;
#define COS_AT(e1, e2)                                                                             \
    (profile(B, cb[0] * (1 + (e1)), cb[1] * (1 + (uni || cubic ? (e1) : (e2))),                    \
             cb[2] * (1 + (cubic ? (e1) : (e2))), x0_deg, step_deg, n_points, wavelength_a, sigma, \
             yb),                                                                                  \
     dot(ya, yb, n_points))
            double best = -1.0, b1 = 0.0, b2 = 0.0;
            const double span = 2.0 * strain_max;
            for (int u = 0; u < N_COARSE; u++) {
                double e1 = -span + 2.0 * span * u / (N_COARSE - 1);
                for (int v = 0; v < (cubic ? 1 : N_COARSE); v++) {
                    double e2 = cubic ? 0.0 : -span + 2.0 * span * v / (N_COARSE - 1);
                    double c = COS_AT(e1, e2);
                    if (c > best) {
                        best = c;
                        b1 = e1;
                        b2 = e2;
                    }
                }
            }
            const double c1 = b1, c2 = b2;
            for (int u = 0; u < N_FINE; u++) {
                double f1 = -FINE_HALF + 2.0 * FINE_HALF * u / (N_FINE - 1);
                for (int v = 0; v < (cubic ? 1 : N_FINE); v += 2) {
                    double f2 = cubic ? 0.0 : -FINE_HALF + 2.0 * FINE_HALF * v / (N_FINE - 1);
                    double c = COS_AT(c1 + f1, c2 + f2);
                    if (c > best) best = c;
                }
            }
#undef COS_AT
            if (best < min_cos) continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                int32_t *np2 = realloc(pr, sizeof(int32_t) * 2 * (size_t)cap);
                if (!np2) {
                    st = pid_fail(err, PID_ERR_NOMEM, "twins: out of memory");
                    goto done;
                }
                pr = np2;
                float *nc = realloc(cs, sizeof(float) * (size_t)cap);
                if (!nc) {
                    st = pid_fail(err, PID_ERR_NOMEM, "twins: out of memory");
                    goto done;
                }
                cs = nc;
            }
            pr[2 * n] = i;
            pr[2 * n + 1] = j;
            cs[n] = (float)best;
            n++;
        }
    }
done:
    free(ya);
    free(yb);
    if (st) {
        free(pr);
        free(cs);
        return st;
    }
    *pairs = pr;
    *cosines = cs;
    *n_pairs = n;
    return PID_OK;
}

pid_status twins_phase_of(const pid_structure *s, double x0_deg, double step_deg, int n_points,
                          double wavelength_a, double strain_max, twin_phase *out, int32_t **hkl,
                          float **intensity, pid_error *err)
{
    *hkl = NULL;
    *intensity = NULL;
    pid_xrd_stick *st = NULL;
    int n = 0;
    pid_status r =
        rsd_phase_sticks(s, x0_deg, step_deg, n_points, wavelength_a, strain_max, &st, &n, err);
    if (r) return r;
    *hkl = malloc(sizeof(int32_t) * 3 * (size_t)(n > 0 ? n : 1));
    *intensity = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!*hkl || !*intensity) {
        free(st);
        free(*hkl);
        free(*intensity);
        *hkl = NULL;
        *intensity = NULL;
        return pid_fail(err, PID_ERR_NOMEM, "twins: out of memory");
    }
    for (int j = 0; j < n; j++) {
        (*hkl)[3 * j] = st[j].h;
        (*hkl)[3 * j + 1] = st[j].k;
        (*hkl)[3 * j + 2] = st[j].l;
        (*intensity)[j] = (float)st[j].intensity;
    }
    free(st);
    *out = (twin_phase){.cell = {s->a, s->b, s->c, s->alpha, s->beta, s->gamma},
                        .spacegroup = s->spacegroup_number,
                        .n = n,
                        .hkl = *hkl,
                        .intensity = *intensity};
    return PID_OK;
}

pid_status twins_matrix(const int32_t *pairs, int64_t n, int64_t k, uint8_t **out, pid_error *err)
{
    *out = NULL;
    if (n <= 0 || k <= 0) return PID_OK;
    uint8_t *t = calloc((size_t)k * (size_t)k, 1);
    if (!t) return pid_fail(err, PID_ERR_NOMEM, "twins: out of memory");
    for (int64_t i = 0; i < n; i++) {
        int64_t a = pairs[2 * i], b = pairs[2 * i + 1];
        if (a < 0 || b < 0 || a >= k || b >= k) continue;
        t[a * k + b] = t[b * k + a] = 1;
    }
    *out = t;
    return PID_OK;
}
