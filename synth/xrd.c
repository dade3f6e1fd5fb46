/* Powder XRD physics: radiation sources, enumeration of reciprocal lattice
 * points grouped into families of symmetry-equivalent reflections, kinematic
 * structure factors with xraylib's X-ray form factors, Lorentz-polarization
 * and the two products built on them (stick patterns, renderer tables). */
#include "synth/xrd.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <xraylib.h>

#include "core/log.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#define XRD_DEG (M_PI / 180.0)
/* Largest reciprocal-space box (points) we are willing to scan; a 1 byte flag
 * per point, so this caps the scratch memory at 256 MiB. Reached only for
 * absurd requests (d_min of a few hundredths of an angstrom on a big cell). */
#define XRD_MAX_BOX_POINTS (1LL << 28)
/* Relative tolerance for "this rotation leaves the reciprocal metric
 * unchanged": operations found by spglib with a loose tolerance on a slightly
 * distorted cell may not; they are left out so every family member has the
 * representative's d-spacing. */
#define XRD_METRIC_TOL 1e-4
/* Reflections whose |F|^2 * multiplicity is below this fraction of the
 * strongest are systematic absences up to rounding (|F| ~ 1e-15 * sum f). */
#define XRD_ZERO_REL 1e-9
/* Renderer tables drop families below this fraction of the strongest. */
#define XRD_REFL_KEEP_REL 1e-6
/* cos^2 values closer than this are the same texture angle. */
#define XRD_TEX_MERGE 1e-4

/* ---------------------------------------------------------------- sources */

/* K-alpha1 and K-alpha2 in angstrom, International Tables for
 * Crystallography Vol. C, Table 4.2.2.1. K-alpha2/K-alpha1 intensity ratio
 * taken as 0.5 for every anode (the usual approximation). */
static const struct {
    const char *element;
    double ka1_a, ka2_a;
} xrd_tubes[] = {
    {"Cu", 1.540562, 1.544390}, {"Mo", 0.709300, 0.713590}, {"Co", 1.788965, 1.792850},
    {"Cr", 2.289700, 2.293606}, {"Fe", 1.936042, 1.939980}, {"Ag", 0.559421, 0.563813},
};
#define XRD_N_TUBES ((int)(sizeof xrd_tubes / sizeof xrd_tubes[0]))
#define XRD_KA2_RATIO 0.5

static void xrd_source_tube(int i, int doublet, pid_xrd_source *src)
{
    memset(src, 0, sizeof *src);
    src->wavelength_a[0] = xrd_tubes[i].ka1_a;
    src->weight[0] = 1.0;
    if (doublet) {
        src->n_lines = 2;
        src->wavelength_a[1] = xrd_tubes[i].ka2_a;
        src->weight[1] = XRD_KA2_RATIO;
        snprintf(src->name, sizeof src->name, "%sKa", xrd_tubes[i].element);
    } else {
        src->n_lines = 1;
        snprintf(src->name, sizeof src->name, "%sKa1", xrd_tubes[i].element);
    }
}

pid_status pid_xrd_source_parse(const char *spec, pid_xrd_source *src, pid_error *err)
{
    if (!src) return pid_fail(err, PID_ERR_ARG, "xrd source: no output given");
    memset(src, 0, sizeof *src);
    if (!spec || !*spec)
        return pid_fail(err, PID_ERR_ARG,
                        "xrd source: empty wavelength (expected CuKa, MoKa1, ... or angstrom)");
    /* Anode names: element symbol + "Ka" (doublet) or "Ka1" (single line),
     * case-insensitive so "cuka" and "CUKA1" work from shells and configs. */
    for (int i = 0; i < XRD_N_TUBES; i++) {
        size_t el = strlen(xrd_tubes[i].element);
        if (strncasecmp(spec, xrd_tubes[i].element, el) != 0) continue;
        if (!strcasecmp(spec + el, "ka")) {
            xrd_source_tube(i, 1, src);
            return PID_OK;
        }
        if (!strcasecmp(spec + el, "ka1")) {
            xrd_source_tube(i, 0, src);
            return PID_OK;
        }
    }
    /* Otherwise a plain number in angstrom: the whole string must parse and
     * be a positive finite value (strtod also accepts "nan" and "inf"). */
    char *end = NULL;
    errno = 0;
    double lambda = strtod(spec, &end);
    while (end && isspace((unsigned char)*end))
        end++;
    if (end == spec || !end || *end != '\0' || errno == ERANGE || !isfinite(lambda) ||
        lambda <= 0.0)
        return pid_fail(err, PID_ERR_ARG,
                        "xrd source: '%s' is neither an anode (CuKa, CuKa1, MoKa, MoKa1, CoKa, "
                        "CrKa, FeKa, AgKa) nor a positive wavelength in angstrom",
                        spec);
    src->n_lines = 1;
    src->wavelength_a[0] = lambda;
    src->weight[0] = 1.0;
    snprintf(src->name, sizeof src->name, "%.6gA", lambda);
    return PID_OK;
}

void pid_xrd_opts_default(pid_xrd_opts *o)
{
    memset(o, 0, sizeof *o);
    o->two_theta_min_deg = 5.0;
    o->two_theta_max_deg = 90.0;
    xrd_source_tube(0, 1, &o->source); /* CuKa doublet; sticks use K-alpha1 */
    o->lp.mode = PID_LP_LAB;
    o->lp.mono_two_theta_deg = 0.0;
    o->lp.polarization = 0.95;
    o->debye_waller = 1;
    o->min_rel_intensity = 1e-3;
}

/* -------------------------------------------------------------------- LP */

/* Lorentz factor of a powder (Debye-Scherrer) measurement: 1/(sin^2 t cos t),
 * the product of the single-crystal 1/sin 2t, the fraction of crystallites in
 * reflecting position (cos t) and the ring length seen by a detector of fixed
 * height (1/sin 2t), constants dropped.
 *
 * Polarization (Azaroff 1955; pyFAI's polarization_factor convention):
 * - lab tube, unpolarized, optional monochromator crystal with angle 2t_m
 *   whose diffraction plane contains the sample's:
 *     P = (1 + cos^2 2t cos^2 2t_m) / (1 + cos^2 2t_m)
 *   (reduces to the textbook 1 + cos^2 2t, up to the constant 1/2, at t_m = 0;
 *   the lab formula keeps the unnormalized (1 + cos^2 2t) there, as pymatgen
 *   does, and the monochromator formula as written in REFERENCES.md).
 * - synchrotron: the beam is linearly polarized in the horizontal plane with
 *   polarization fraction p (p = 1 fully, 0.5 unpolarized) and the detector
 *   scans 2t in the vertical plane, i.e. perpendicular to the electric field.
 *   The part polarized perpendicular to the scattering plane is not reduced,
 *   the part in the plane by cos^2 2t:
 *     P = p + (1 - p) cos^2 2t
 *   which is pyFAI's (1 + cos^2 2t - f cos(2 chi) sin^2 2t)/2 with
 *   f = 2p - 1 and chi = 90 deg. At p = 0.5 it is half the lab value. */
double pid_xrd_lp_factor(const pid_lp *lp, double two_theta_deg)
{
    if (!lp || lp->mode == PID_LP_NONE) return 1.0;
    double tt = two_theta_deg * XRD_DEG;
    double t = 0.5 * tt;
    double st = sin(t), ct = cos(t), c2 = cos(tt);
    double lorentz = 1.0 / (st * st * ct);
    double pol;
    if (lp->mode == PID_LP_SYNCHROTRON) {
        double p = lp->polarization;
        pol = p + (1.0 - p) * c2 * c2;
    } else if (lp->mono_two_theta_deg > 0.0) {
        double cm = cos(lp->mono_two_theta_deg * XRD_DEG);
        pol = (1.0 + c2 * c2 * cm * cm) / (1.0 + cm * cm);
    } else {
        pol = 1.0 + c2 * c2;
    }
    return pol * lorentz;
}

static pid_status xrd_check_lp(const pid_lp *lp, pid_error *err)
{
    if (lp->mode != PID_LP_LAB && lp->mode != PID_LP_SYNCHROTRON && lp->mode != PID_LP_NONE)
        return pid_fail(err, PID_ERR_ARG, "xrd: unknown Lorentz-polarization mode %d",
                        (int)lp->mode);
    if (lp->mode == PID_LP_LAB &&
        !(isfinite(lp->mono_two_theta_deg) && lp->mono_two_theta_deg >= 0.0 &&
          lp->mono_two_theta_deg < 180.0))
        return pid_fail(err, PID_ERR_ARG,
                        "xrd: monochromator 2-theta %g deg is outside [0, 180) (0 = none)",
                        lp->mono_two_theta_deg);
    if (lp->mode == PID_LP_SYNCHROTRON &&
        !(isfinite(lp->polarization) && lp->polarization >= 0.0 && lp->polarization <= 1.0))
        return pid_fail(err, PID_ERR_ARG, "xrd: polarization fraction %g is outside [0, 1]",
                        lp->polarization);
    return PID_OK;
}

/* ----------------------------------------------------------- form factor */

double pid_xrd_form_factor(int z, double s_inv_angstrom)
{
    if (z < 1 || !(s_inv_angstrom >= 0.0) || !isfinite(s_inv_angstrom)) return NAN;
    /* xraylib's FF_Rayl takes the momentum transfer q = sin(theta)/lambda in
     * 1/angstrom, theta being half the scattering angle, i.e. our s; it
     * interpolates the Hubbell et al. (1975) relativistic Hartree-Fock f0. */
    xrl_error *xe = NULL;
    double f = FF_Rayl(z, s_inv_angstrom, &xe);
    if (xe) {
        xrl_error_free(xe);
        return NAN;
    }
    return f;
}

/* --------------------------------------------------------------- families */

typedef struct {
    int hkl[3];     /* representative */
    int mult;       /* orbit size under the Laue group */
    int member_off; /* first member in xrd_families.members */
    double inv_d2;  /* 1/d^2, angstrom^-2 */
    double f2;      /* |F|^2 of one member */
} xrd_family;

typedef struct {
    xrd_family *fam;
    int n_fam;
    int (*members)[3]; /* all members of all families, family by family */
    int n_members;
    double gstar[3][3];
} xrd_families;

static void xrd_families_free(xrd_families *f)
{
    free(f->fam);
    free(f->members);
    memset(f, 0, sizeof *f);
}

static double xrd_q(const double g[3][3], const int h[3])
{
    double q = 0.0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            q += h[i] * g[i][j] * h[j];
    return q;
}

/* Preferred representative of a family, so output does not depend on the
 * enumeration order: the member with most non-negative indices, then the
 * largest (h, k, l) lexicographically: {100} -> (1,0,0), {321} -> (3,2,1),
 * a triclinic pair (1,-1,1)/(-1,1,-1) -> (1,-1,1). */
static int xrd_hkl_better(const int a[3], const int b[3])
{
    int na = (a[0] >= 0) + (a[1] >= 0) + (a[2] >= 0);
    int nb = (b[0] >= 0) + (b[1] >= 0) + (b[2] >= 0);
    if (na != nb) return na > nb;
    for (int i = 0; i < 3; i++)
        if (a[i] != b[i]) return a[i] > b[i];
    return 0;
}

/* The Laue group acting on Miller indices (h' = h R): the distinct rotation
 * parts of the structure's operations, each also with -R (Friedel's law: the
 * form factors are real, so |F(-h)| = |F(h)|), keeping only rotations that
 * leave G* unchanged (R G* R^T = G*). Identity always included. */
static pid_status xrd_laue_group(const pid_structure *s, const double gs[3][3], int (**out)[3][3],
                                 int *n_out, pid_error *err)
{
    int cap = 2 * (s->n_ops > 0 ? s->n_ops : 0) + 2;
    int(*lg)[3][3] = malloc((size_t)cap * sizeof *lg);
    if (!lg) return pid_fail(err, PID_ERR_NOMEM, "xrd: out of memory (Laue group)");
    int n = 0, dropped = 0;
    double gmax = 0.0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            gmax = fmax(gmax, fabs(gs[i][j]));
    for (int op = -1; op < s->n_ops; op++) {
        int r[3][3];
        if (op < 0) {
            memset(r, 0, sizeof r);
            r[0][0] = r[1][1] = r[2][2] = 1;
        } else {
            memcpy(r, s->rot[op], sizeof r);
        }
        for (int sign = 1; sign >= -1; sign -= 2) {
            int rs[3][3];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++)
                    rs[i][j] = sign * r[i][j];
            int dup = 0;
            for (int m = 0; m < n && !dup; m++)
                dup = !memcmp(lg[m], rs, sizeof rs);
            if (dup) continue;
            /* R G* R^T == G* ? */
            double dev = 0.0;
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) {
                    double v = 0.0;
                    for (int a = 0; a < 3; a++)
                        for (int b = 0; b < 3; b++)
                            v += rs[i][a] * gs[a][b] * rs[j][b];
                    dev = fmax(dev, fabs(v - gs[i][j]));
                }
            if (dev > XRD_METRIC_TOL * gmax) {
                dropped++;
                continue;
            }
            memcpy(lg[n++], rs, sizeof rs);
        }
    }
    if (dropped)
        PID_LOGW("xrd: %d operation(s) of '%s' change the cell metric by more than %g; "
                 "ignored for grouping reflections",
                 dropped, s->name, XRD_METRIC_TOL);
    *out = lg;
    *n_out = n;
    return PID_OK;
}

static pid_status xrd_check_structure(const pid_structure *s, pid_error *err)
{
    if (!s) return pid_fail(err, PID_ERR_ARG, "xrd: no structure given");
    if (s->n_sites <= 0 || !s->sites)
        return pid_fail(err, PID_ERR_FORMAT, "xrd: structure '%s' has no atoms", s->name);
    if (s->n_ops < 0 || (s->n_ops > 0 && !s->rot))
        return pid_fail(err, PID_ERR_FORMAT, "xrd: structure '%s' has an invalid operation list",
                        s->name);
    double v = pid_structure_volume(s);
    if (!(v > 0.0) || !isfinite(v))
        return pid_fail(err, PID_ERR_FORMAT, "xrd: structure '%s' has a degenerate cell", s->name);
    for (int j = 0; j < s->n_sites; j++) {
        const pid_site *a = &s->sites[j];
        if (a->z < 1 || a->z > 98 || !isfinite(a->occupancy) || !isfinite(a->b_iso) ||
            !isfinite(a->frac[0]) || !isfinite(a->frac[1]) || !isfinite(a->frac[2]))
            return pid_fail(err, PID_ERR_FORMAT,
                            "xrd: structure '%s', site %d ('%s'): invalid atomic number, "
                            "occupancy, B or coordinates",
                            s->name, j, a->label);
    }
    return PID_OK;
}

/* Every family of reflections with 0 < 1/d^2 <= 1/d_min^2, one structure
 * factor per family. Cost: O(points x |Laue group|) for the orbits plus
 * O(families x atoms) for the structure factors; form factors evaluated once
 * per (element, family). On success *f owns its arrays (xrd_families_free). */
static pid_status xrd_families_compute(const pid_structure *s, double d_min_angstrom,
                                       int debye_waller, xrd_families *f, pid_error *err)
{
    memset(f, 0, sizeof *f);
    pid_status st = xrd_check_structure(s, err);
    if (st) return st;
    if (!(d_min_angstrom > 0.0) || !isfinite(d_min_angstrom))
        return pid_fail(err, PID_ERR_ARG, "xrd: d_min %g angstrom must be positive and finite",
                        d_min_angstrom);

    int(*laue)[3][3] = NULL;
    uint8_t *seen = NULL;
    int *zidx = NULL;
    double *fz = NULL, *occ_dw_b = NULL;
    int zlist[99];
    int nz = 0;

    pid_structure_reciprocal_metric(s, f->gstar);
    const double(*gs)[3] = (const double(*)[3])f->gstar;
    int n_laue = 0;
    st = xrd_laue_group(s, gs, &laue, &n_laue, err);
    if (st) goto done;

    /* Box of Miller indices: |h| = |g . a| <= |g| |a|, so h_max = gmax * a.
     * One extra layer holds orbit members that rounding pushes past the
     * sphere's edge. */
    double gmax2 = 1.0 / (d_min_angstrom * d_min_angstrom);
    double gmax = sqrt(gmax2);
    double len[3] = {s->a, s->b, s->c};
    int hmax[3], dim[3];
    long long box = 1;
    for (int i = 0; i < 3; i++) {
        double m = floor(gmax * len[i] * (1.0 + 1e-9)) + 1.0;
        if (!(m < 1e6)) {
            st = pid_fail(err, PID_ERR_ARG, "xrd: d_min %g angstrom is too small for '%s'",
                          d_min_angstrom, s->name);
            goto done;
        }
        hmax[i] = (int)m;
        dim[i] = 2 * hmax[i] + 1;
        box *= dim[i];
    }
    if (box > XRD_MAX_BOX_POINTS) {
        st = pid_fail(err, PID_ERR_ARG,
                      "xrd: d_min %g angstrom asks for %lld reciprocal lattice points of '%s' "
                      "(limit %lld)",
                      d_min_angstrom, box, s->name, (long long)XRD_MAX_BOX_POINTS);
        goto done;
    }
    seen = calloc((size_t)box, 1);
    /* Points inside the sphere: volume (4/3) pi gmax^3 times the cell volume
     * (the reciprocal cell's volume is 1/V), plus a margin for the surface. */
    double vol = pid_structure_volume(s);
    double est = 4.18879 * gmax2 * gmax * vol;
    size_t cap_m = (size_t)(est * 1.2 + 64.0 + 4.0 * n_laue);
    f->members = malloc(cap_m * sizeof *f->members);
    size_t cap_f = cap_m / 2 + 16;
    f->fam = malloc(cap_f * sizeof *f->fam);
    if (!seen || !f->members || !f->fam) {
        st = pid_fail(err, PID_ERR_NOMEM, "xrd: out of memory (reflections of '%s')", s->name);
        goto done;
    }

    double lim2 = gmax2 * (1.0 + 1e-12);
    for (int h = -hmax[0] + 1; h <= hmax[0] - 1; h++)
        for (int k = -hmax[1] + 1; k <= hmax[1] - 1; k++)
            for (int l = -hmax[2] + 1; l <= hmax[2] - 1; l++) {
                int p[3] = {h, k, l};
                long long id =
                    ((long long)(h + hmax[0]) * dim[1] + (k + hmax[1])) * dim[2] + (l + hmax[2]);
                if (seen[id]) continue;
                double q = xrd_q(gs, p);
                if (q <= 0.0 || q > lim2) continue;
                /* New family: its orbit under the Laue group. */
                if ((size_t)f->n_members + (size_t)n_laue > cap_m) {
                    size_t nc = 2 * cap_m + (size_t)n_laue;
                    void *nm = realloc(f->members, nc * sizeof *f->members);
                    if (!nm) {
                        st = pid_fail(err, PID_ERR_NOMEM, "xrd: out of memory (reflections)");
                        goto done;
                    }
                    f->members = nm;
                    cap_m = nc;
                }
                if ((size_t)f->n_fam + 1 > cap_f) {
                    size_t nc = 2 * cap_f;
                    void *nf = realloc(f->fam, nc * sizeof *f->fam);
                    if (!nf) {
                        st = pid_fail(err, PID_ERR_NOMEM, "xrd: out of memory (reflections)");
                        goto done;
                    }
                    f->fam = nf;
                    cap_f = nc;
                }
                xrd_family *fa = &f->fam[f->n_fam];
                fa->member_off = f->n_members;
                fa->mult = 0;
                fa->inv_d2 = q;
                memcpy(fa->hkl, p, sizeof p);
                for (int r = 0; r < n_laue; r++) {
                    int m[3];
                    for (int j = 0; j < 3; j++)
                        m[j] = p[0] * laue[r][0][j] + p[1] * laue[r][1][j] + p[2] * laue[r][2][j];
                    if (abs(m[0]) > hmax[0] || abs(m[1]) > hmax[1] || abs(m[2]) > hmax[2])
                        continue; /* only possible with a broken metric; excluded above */
                    long long mid =
                        ((long long)(m[0] + hmax[0]) * dim[1] + (m[1] + hmax[1])) * dim[2] +
                        (m[2] + hmax[2]);
                    if (seen[mid]) continue;
                    seen[mid] = 1;
                    memcpy(f->members[f->n_members++], m, sizeof m);
                    fa->mult++;
                    if (xrd_hkl_better(m, fa->hkl)) memcpy(fa->hkl, m, sizeof m);
                }
                f->n_fam++;
            }

    /* Distinct elements, so f0 is evaluated once per (element, family). */
    zidx = malloc((size_t)s->n_sites * sizeof *zidx);
    occ_dw_b = malloc((size_t)s->n_sites * sizeof *occ_dw_b);
    fz = malloc(99 * sizeof *fz);
    if (!zidx || !occ_dw_b || !fz) {
        st = pid_fail(err, PID_ERR_NOMEM, "xrd: out of memory (structure factors)");
        goto done;
    }
    for (int j = 0; j < s->n_sites; j++) {
        int z = s->sites[j].z, e = 0;
        while (e < nz && zlist[e] != z)
            e++;
        if (e == nz) zlist[nz++] = z;
        zidx[j] = e;
        occ_dw_b[j] = debye_waller ? s->sites[j].b_iso : 0.0;
    }
    int any_b = 0;
    for (int j = 0; j < s->n_sites; j++)
        any_b |= occ_dw_b[j] != 0.0;

    for (int i = 0; i < f->n_fam; i++) {
        xrd_family *fa = &f->fam[i];
        double s_inv = 0.5 * sqrt(fa->inv_d2); /* sin(theta)/lambda = 1/(2d) */
        double s2 = s_inv * s_inv;
        for (int e = 0; e < nz; e++) {
            fz[e] = pid_xrd_form_factor(zlist[e], s_inv);
            if (!isfinite(fz[e])) {
                st = pid_fail(err, PID_ERR_FORMAT,
                              "xrd: no X-ray form factor for Z=%d at s=%g 1/angstrom (xraylib)",
                              zlist[e], s_inv);
                goto done;
            }
        }
        double re = 0.0, im = 0.0;
        const int *h = fa->hkl;
        for (int j = 0; j < s->n_sites; j++) {
            const pid_site *a = &s->sites[j];
            double amp = a->occupancy * fz[zidx[j]];
            if (any_b && occ_dw_b[j] != 0.0) amp *= exp(-occ_dw_b[j] * s2);
            /* Reduce h.r to [0, 1) before scaling by 2 pi: keeps full
             * precision in the argument of sin/cos for large indices. */
            double x = h[0] * a->frac[0] + h[1] * a->frac[1] + h[2] * a->frac[2];
            x -= floor(x);
            double ph = 2.0 * M_PI * x;
            re += amp * cos(ph);
            im += amp * sin(ph);
        }
        fa->f2 = re * re + im * im;
    }

done:
    free(laue);
    free(seen);
    free(zidx);
    free(fz);
    free(occ_dw_b);
    if (st) xrd_families_free(f);
    return st;
}

/* ---------------------------------------------------------------- sticks */

static int xrd_stick_cmp(const void *pa, const void *pb)
{
    const pid_xrd_stick *a = pa, *b = pb;
    if (a->two_theta_deg != b->two_theta_deg) return a->two_theta_deg < b->two_theta_deg ? -1 : 1;
    /* Coincident families (cubic 333/511): larger indices last, fixed order. */
    int ha[3] = {a->h, a->k, a->l}, hb[3] = {b->h, b->k, b->l};
    for (int i = 0; i < 3; i++)
        if (ha[i] != hb[i]) return ha[i] < hb[i] ? -1 : 1;
    return 0;
}

pid_status pid_xrd_sticks(const pid_structure *s, const pid_xrd_opts *opts, pid_xrd_stick **out,
                          int *n, pid_error *err)
{
    if (!out || !n || !opts) return pid_fail(err, PID_ERR_ARG, "xrd sticks: NULL argument");
    *out = NULL;
    *n = 0;
    double lambda = opts->source.wavelength_a[0];
    if (opts->source.n_lines < 1 || !(lambda > 0.0) || !isfinite(lambda))
        return pid_fail(err, PID_ERR_ARG, "xrd sticks: source has no valid wavelength");
    double tmin = opts->two_theta_min_deg, tmax = opts->two_theta_max_deg;
    if (!(isfinite(tmin) && isfinite(tmax) && tmin >= 0.0 && tmin < tmax && tmax < 180.0))
        return pid_fail(err, PID_ERR_ARG,
                        "xrd sticks: 2-theta range %g..%g deg must satisfy 0 <= min < max < 180",
                        tmin, tmax);
    if (!(opts->min_rel_intensity >= 0.0 && opts->min_rel_intensity < 1.0))
        return pid_fail(err, PID_ERR_ARG, "xrd sticks: min_rel_intensity %g is outside [0, 1)",
                        opts->min_rel_intensity);
    pid_status st = xrd_check_lp(&opts->lp, err);
    if (st) return st;

    double d_min = lambda / (2.0 * sin(0.5 * tmax * XRD_DEG));
    xrd_families fs;
    st = xrd_families_compute(s, d_min, opts->debye_waller, &fs, err);
    if (st) return st;

    pid_xrd_stick *sk = malloc((size_t)(fs.n_fam > 0 ? fs.n_fam : 1) * sizeof *sk);
    if (!sk) {
        xrd_families_free(&fs);
        return pid_fail(err, PID_ERR_NOMEM, "xrd sticks: out of memory");
    }
    int m = 0;
    double imax = 0.0;
    for (int i = 0; i < fs.n_fam; i++) {
        const xrd_family *fa = &fs.fam[i];
        double d = 1.0 / sqrt(fa->inv_d2);
        double sin_t = lambda / (2.0 * d);
        if (sin_t > 1.0) continue;
        double tt = 2.0 * asin(sin_t) / XRD_DEG;
        if (tt < tmin || tt > tmax) continue;
        pid_xrd_stick *o = &sk[m++];
        o->h = fa->hkl[0];
        o->k = fa->hkl[1];
        o->l = fa->hkl[2];
        o->multiplicity = fa->mult;
        o->d_angstrom = d;
        o->two_theta_deg = tt;
        o->f2 = fa->f2;
        o->intensity = fa->f2 * fa->mult * pid_xrd_lp_factor(&opts->lp, tt);
        imax = fmax(imax, o->intensity);
    }
    xrd_families_free(&fs);

    /* Scale to 100 and drop weak sticks; systematic absences (numerical
     * zeros) go even when min_rel_intensity is 0. */
    double keep = fmax(opts->min_rel_intensity, XRD_ZERO_REL);
    int k = 0;
    if (imax > 0.0)
        for (int i = 0; i < m; i++) {
            if (sk[i].intensity < keep * imax) continue;
            sk[k] = sk[i];
            sk[k].intensity = 100.0 * sk[i].intensity / imax;
            k++;
        }
    if (k == 0) {
        free(sk);
        return PID_OK;
    }
    qsort(sk, (size_t)k, sizeof *sk, xrd_stick_cmp);
    *out = sk;
    *n = k;
    return PID_OK;
}

/* ------------------------------------------------------------ reflections */

/* Texture data of one family and one axis u (reciprocal basis): the distinct
 * cos^2 of the angle between each member h and u, with the fraction of
 * members at each. When more than PID_TEX_NCOS distinct values remain the
 * closest neighbours are merged into their weighted mean: that keeps
 * sum w cos^2 (so the March-Dollase average to first order in the spread) and
 * moves no value by more than the gap it closes. */
static void xrd_texture(const double gs[3][3], const int (*mem)[3], int n_mem, const int u[3],
                        float *cos2_out, float *w_out)
{
    double val[PID_TEX_NCOS + 1], wt[PID_TEX_NCOS + 1];
    int nv = 0;
    double uu = sqrt(xrd_q(gs, u));
    double w1 = 1.0 / n_mem;
    for (int i = 0; i < n_mem; i++) {
        double hu = 0.0;
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++)
                hu += mem[i][a] * gs[a][b] * u[b];
        double c = hu / (sqrt(xrd_q(gs, mem[i])) * uu);
        double c2 = fmin(1.0, c * c);
        /* Insert into the sorted list, merging with a value within tolerance. */
        int pos = 0;
        while (pos < nv && val[pos] < c2 - XRD_TEX_MERGE)
            pos++;
        if (pos < nv && fabs(val[pos] - c2) <= XRD_TEX_MERGE) {
            val[pos] = (val[pos] * wt[pos] + c2 * w1) / (wt[pos] + w1);
            wt[pos] += w1;
        } else {
            for (int j = nv; j > pos; j--) {
                val[j] = val[j - 1];
                wt[j] = wt[j - 1];
            }
            val[pos] = c2;
            wt[pos] = w1;
            nv++;
        }
        if (nv > PID_TEX_NCOS) {
            /* Merge the closest adjacent pair (closest pair of a sorted list). */
            int best = 0;
            for (int j = 1; j + 1 < nv; j++)
                if (val[j + 1] - val[j] < val[best + 1] - val[best]) best = j;
            double wsum = wt[best] + wt[best + 1];
            val[best] = (val[best] * wt[best] + val[best + 1] * wt[best + 1]) / wsum;
            wt[best] = wsum;
            for (int j = best + 1; j + 1 < nv; j++) {
                val[j] = val[j + 1];
                wt[j] = wt[j + 1];
            }
            nv--;
        }
    }
    for (int j = 0; j < PID_TEX_NCOS; j++) {
        cos2_out[j] = j < nv ? (float)val[j] : 0.0f;
        w_out[j] = j < nv ? (float)wt[j] : 0.0f;
    }
}

typedef struct {
    double inv_d2;
    int idx;
    int hkl[3];
} xrd_order;

static int xrd_order_cmp(const void *pa, const void *pb)
{
    const xrd_order *a = pa, *b = pb;
    if (a->inv_d2 != b->inv_d2) return a->inv_d2 < b->inv_d2 ? -1 : 1;
    for (int i = 0; i < 3; i++)
        if (a->hkl[i] != b->hkl[i]) return a->hkl[i] < b->hkl[i] ? -1 : 1;
    return 0;
}

pid_status pid_xrd_reflections(const pid_structure *s, double d_min_angstrom, int debye_waller,
                               k_xrd_refl **out, int *n, pid_error *err)
{
    if (!out || !n) return pid_fail(err, PID_ERR_ARG, "xrd reflections: NULL argument");
    *out = NULL;
    *n = 0;
    xrd_families fs;
    pid_status st = xrd_families_compute(s, d_min_angstrom, debye_waller, &fs, err);
    if (st) return st;

    static const int axes[PID_TEX_AXES][3] = {{0, 0, 1}, {1, 0, 0}, {1, 1, 0}, {1, 1, 1}};
    double fmax_ = 0.0;
    for (int i = 0; i < fs.n_fam; i++)
        fmax_ = fmax(fmax_, fs.fam[i].f2 * fs.fam[i].mult);
    xrd_order *ord = malloc((size_t)(fs.n_fam > 0 ? fs.n_fam : 1) * sizeof *ord);
    k_xrd_refl *r = NULL;
    if (!ord) {
        st = pid_fail(err, PID_ERR_NOMEM, "xrd reflections: out of memory");
        goto done;
    }
    int m = 0;
    for (int i = 0; i < fs.n_fam; i++) {
        if (!(fmax_ > 0.0) || fs.fam[i].f2 * fs.fam[i].mult < XRD_REFL_KEEP_REL * fmax_) continue;
        ord[m].inv_d2 = fs.fam[i].inv_d2;
        ord[m].idx = i;
        memcpy(ord[m].hkl, fs.fam[i].hkl, sizeof ord[m].hkl);
        m++;
    }
    if (m == 0) goto done;
    qsort(ord, (size_t)m, sizeof *ord, xrd_order_cmp); /* d descending */
    r = calloc((size_t)m, sizeof *r);
    if (!r) {
        st = pid_fail(err, PID_ERR_NOMEM, "xrd reflections: out of memory");
        goto done;
    }
    for (int i = 0; i < m; i++) {
        const xrd_family *fa = &fs.fam[ord[i].idx];
        for (int j = 0; j < 3; j++)
            r[i].hkl[j] = (float)fa->hkl[j];
        r[i].f2m = (float)(fa->f2 * fa->mult);
        for (int ax = 0; ax < PID_TEX_AXES; ax++)
            xrd_texture((const double(*)[3])fs.gstar,
                        (const int(*)[3]) & fs.members[fa->member_off], fa->mult, axes[ax],
                        r[i].tex_cos2[ax], r[i].tex_w[ax]);
    }
    *out = r;
    *n = m;
    r = NULL;

done:
    free(ord);
    free(r);
    xrd_families_free(&fs);
    return st;
}
