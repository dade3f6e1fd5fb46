/* Unit tests of synth/xrd: sources, Bragg positions, multiplicities,
 * systematic absences, structure factors, Lorentz-polarization, form factors
 * and texture tables, checked against hand-computed values, closed-form
 * structure factors and International Tables data (never our own output). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "synth/xrd.h"

#define DEG (3.14159265358979323846 / 180.0)

/* ------------------------------------------------------------- helpers */

typedef struct {
    int z;
    double x, y, zc, occ, b;
} site_spec;

/* The 48 rotations of m-3m as signed permutation matrices (cell basis of a
 * cubic cell): every cubic space group's Laue class, built here so the tests
 * of the grouping do not depend on spglib. */
static int cubic_ops(int (*rot)[3][3])
{
    static const int perm[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                   {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    int n = 0;
    for (int p = 0; p < 6; p++)
        for (int sgn = 0; sgn < 8; sgn++) {
            memset(rot[n], 0, sizeof rot[n]);
            for (int i = 0; i < 3; i++)
                rot[n][i][perm[p][i]] = (sgn >> i) & 1 ? -1 : 1;
            n++;
        }
    return n;
}

/* A structure record built by hand (every atom of the cell listed); ops may
 * be NULL (then only the identity and Friedel's law group reflections). */
static pid_structure *mk_structure(double a, double b, double c, double al, double be, double ga,
                                   const site_spec *sp, int n, const int (*ops)[3][3], int n_ops)
{
    pid_structure *s = calloc(1, sizeof *s);
    assert_non_null(s);
    snprintf(s->name, sizeof s->name, "test");
    s->a = a;
    s->b = b;
    s->c = c;
    s->alpha = al;
    s->beta = be;
    s->gamma = ga;
    s->n_sites = n;
    s->n_asym = n;
    s->sites = calloc((size_t)n, sizeof *s->sites);
    assert_non_null(s->sites);
    for (int i = 0; i < n; i++) {
        s->sites[i].z = sp[i].z;
        snprintf(s->sites[i].label, sizeof s->sites[i].label, "X%d", i);
        s->sites[i].frac[0] = sp[i].x;
        s->sites[i].frac[1] = sp[i].y;
        s->sites[i].frac[2] = sp[i].zc;
        s->sites[i].occupancy = sp[i].occ;
        s->sites[i].b_iso = sp[i].b;
    }
    s->n_ops = n_ops;
    if (n_ops > 0) {
        s->rot = malloc((size_t)n_ops * sizeof *s->rot);
        s->trans = calloc((size_t)n_ops, sizeof *s->trans);
        assert_non_null(s->rot);
        assert_non_null(s->trans);
        memcpy(s->rot, ops, (size_t)n_ops * sizeof *s->rot);
    }
    return s;
}

static void free_structure(pid_structure *s)
{
    if (!s) return;
    free(s->sites);
    free(s->rot);
    free(s->trans);
    free(s);
}

static pid_structure *mk_cubic(double a, const site_spec *sp, int n)
{
    int rot[48][3][3];
    int n_ops = cubic_ops(rot);
    return mk_structure(a, a, a, 90, 90, 90, sp, n, (const int(*)[3][3])rot, n_ops);
}

/* Diamond Si, a = 5.4307 A (8 atoms of the conventional cell). */
static pid_structure *mk_si(double b_iso)
{
    site_spec sp[8];
    const double fcc[4][3] = {{0, 0, 0}, {0, 0.5, 0.5}, {0.5, 0, 0.5}, {0.5, 0.5, 0}};
    for (int i = 0; i < 4; i++) {
        sp[i] = (site_spec){14, fcc[i][0], fcc[i][1], fcc[i][2], 1.0, b_iso};
        sp[i + 4] =
            (site_spec){14, fcc[i][0] + 0.25, fcc[i][1] + 0.25, fcc[i][2] + 0.25, 1.0, b_iso};
    }
    return mk_cubic(5.4307, sp, 8);
}

static pid_xrd_opts opts_single(double lambda, double tt_min, double tt_max, pid_lp_mode lp)
{
    pid_xrd_opts o;
    pid_xrd_opts_default(&o);
    pid_error err;
    char buf[32];
    snprintf(buf, sizeof buf, "%.9g", lambda);
    assert_int_equal(pid_xrd_source_parse(buf, &o.source, &err), PID_OK);
    o.two_theta_min_deg = tt_min;
    o.two_theta_max_deg = tt_max;
    o.lp.mode = lp;
    o.min_rel_intensity = 0.0;
    return o;
}

/* Stick whose family contains (h,k,l): matched through the cubic family key
 * (sorted absolute indices), or exactly when `exact`. NULL if absent. */
static const pid_xrd_stick *find_family(const pid_xrd_stick *sk, int n, int h, int k, int l)
{
    int want[3] = {abs(h), abs(k), abs(l)};
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (want[j] > want[i]) {
                int t = want[i];
                want[i] = want[j];
                want[j] = t;
            }
    for (int i = 0; i < n; i++) {
        int got[3] = {abs(sk[i].h), abs(sk[i].k), abs(sk[i].l)};
        for (int a = 0; a < 3; a++)
            for (int b = a + 1; b < 3; b++)
                if (got[b] > got[a]) {
                    int t = got[a];
                    got[a] = got[b];
                    got[b] = t;
                }
        if (!memcmp(got, want, sizeof got)) return &sk[i];
    }
    return NULL;
}

static const pid_xrd_stick *find_exact(const pid_xrd_stick *sk, int n, int h, int k, int l)
{
    for (int i = 0; i < n; i++)
        if (sk[i].h == h && sk[i].k == k && sk[i].l == l) return &sk[i];
    return NULL;
}

/* -------------------------------------------------------------- sources */

static void test_source_parse(void **state)
{
    (void)state;
    pid_xrd_source s;
    pid_error err;
    /* International Tables Vol. C, Table 4.2.2.1 (K-alpha1, K-alpha2). */
    static const struct {
        const char *name;
        double ka1, ka2;
    } tubes[] = {{"CuKa", 1.540562, 1.544390}, {"MoKa", 0.709300, 0.713590},
                 {"CoKa", 1.788965, 1.792850}, {"CrKa", 2.289700, 2.293606},
                 {"FeKa", 1.936042, 1.939980}, {"AgKa", 0.559421, 0.563813}};
    for (size_t i = 0; i < sizeof tubes / sizeof tubes[0]; i++) {
        assert_int_equal(pid_xrd_source_parse(tubes[i].name, &s, &err), PID_OK);
        assert_int_equal(s.n_lines, 2);
        assert_true(fabs(s.wavelength_a[0] - tubes[i].ka1) < 1e-9);
        assert_true(fabs(s.wavelength_a[1] - tubes[i].ka2) < 1e-9);
        assert_true(fabs(s.weight[0] - 1.0) < 1e-12);
        assert_true(fabs(s.weight[1] - 0.5) < 1e-12);
        char one[16];
        snprintf(one, sizeof one, "%s1", tubes[i].name);
        assert_int_equal(pid_xrd_source_parse(one, &s, &err), PID_OK);
        assert_int_equal(s.n_lines, 1);
        assert_true(fabs(s.wavelength_a[0] - tubes[i].ka1) < 1e-9);
        assert_string_equal(s.name, one);
    }
    assert_int_equal(pid_xrd_source_parse("cuka1", &s, &err), PID_OK);
    assert_true(fabs(s.wavelength_a[0] - 1.540562) < 1e-9);

    assert_int_equal(pid_xrd_source_parse("0.4133", &s, &err), PID_OK);
    assert_int_equal(s.n_lines, 1);
    assert_true(fabs(s.wavelength_a[0] - 0.4133) < 1e-12);
    assert_true(fabs(s.weight[0] - 1.0) < 1e-12);

    const char *bad[] = {"",    "nan",   "NaN",  "-1.54", "0",    "inf",
                         "abc", "1.54x", "CuKb", "Cu",    "1e999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pid_error_clear(&err);
        assert_int_equal(pid_xrd_source_parse(bad[i], &s, &err), PID_ERR_ARG);
        assert_int_equal(err.code, PID_ERR_ARG);
        assert_true(strlen(err.msg) > 10);
    }
    assert_int_equal(pid_xrd_source_parse(NULL, &s, &err), PID_ERR_ARG);
}

/* ------------------------------------------------------ Bragg positions */

static void test_si_bragg_positions(void **state)
{
    (void)state;
    pid_structure *si = mk_si(0.0);
    pid_xrd_opts o = opts_single(1.540562, 10, 60, PID_LP_LAB);
    pid_xrd_stick *sk = NULL;
    int n = 0;
    pid_error err;
    assert_int_equal(pid_xrd_sticks(si, &o, &sk, &n, &err), PID_OK);
    /* Hand values: d = a / sqrt(h^2+k^2+l^2), 2t = 2 asin(lambda / 2d),
     * a = 5.4307 A, CuKa1 1.540562 A: 28.443, 47.304, 56.124 deg. */
    const struct {
        int h, k, l;
        double tt, d;
    } ref[] = {{1, 1, 1, 28.443, 3.13542}, {2, 2, 0, 47.304, 1.92004}, {3, 1, 1, 56.124, 1.63742}};
    for (int i = 0; i < 3; i++) {
        const pid_xrd_stick *p = find_family(sk, n, ref[i].h, ref[i].k, ref[i].l);
        assert_non_null(p);
        assert_true(fabs(p->two_theta_deg - ref[i].tt) < 0.002);
        assert_true(fabs(p->d_angstrom - ref[i].d) < 1e-4);
        assert_int_equal(p->h, ref[i].h);
        assert_int_equal(p->k, ref[i].k);
        assert_int_equal(p->l, ref[i].l);
    }
    /* Between 10 and 60 deg diamond Si has exactly 111, 220, 311 (200 and
     * 222 are forbidden), and the sticks come sorted by 2-theta. */
    assert_int_equal(n, 3);
    for (int i = 1; i < n; i++)
        assert_true(sk[i].two_theta_deg > sk[i - 1].two_theta_deg);
    free(sk);
    free_structure(si);
}

/* -------------------------------------------------------- multiplicities */

static void test_cubic_multiplicities(void **state)
{
    (void)state;
    site_spec po = {29, 0, 0, 0, 1, 0}; /* primitive cubic, one atom */
    pid_structure *s = mk_cubic(4.0, &po, 1);
    pid_xrd_opts o = opts_single(1.0, 1, 170, PID_LP_NONE);
    pid_xrd_stick *sk = NULL;
    int n = 0;
    pid_error err;
    assert_int_equal(pid_xrd_sticks(s, &o, &sk, &n, &err), PID_OK);
    /* m-3m multiplicities (International Tables Vol. A). */
    const struct {
        int h, k, l, m;
    } ref[] = {{1, 0, 0, 6},  {1, 1, 0, 12}, {1, 1, 1, 8},  {2, 1, 0, 24},
               {2, 1, 1, 24}, {2, 2, 1, 24}, {3, 2, 1, 48}, {2, 0, 0, 6}};
    for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++) {
        const pid_xrd_stick *p = find_exact(sk, n, ref[i].h, ref[i].k, ref[i].l);
        assert_non_null(p);
        assert_int_equal(p->multiplicity, ref[i].m);
    }
    /* One atom at the origin: F = f0(s), so the ratio of intensities of two
     * families with LP off is mult * f0^2 ratio. */
    const pid_xrd_stick *p100 = find_exact(sk, n, 1, 0, 0), *p321 = find_exact(sk, n, 3, 2, 1);
    double f100 = pid_xrd_form_factor(29, 0.5 / p100->d_angstrom);
    double f321 = pid_xrd_form_factor(29, 0.5 / p321->d_angstrom);
    double want = (48 * f321 * f321) / (6 * f100 * f100);
    assert_true(fabs(p321->intensity / p100->intensity - want) < 1e-9 * want);
    assert_true(fabs(p100->f2 - f100 * f100) < 1e-9 * f100 * f100);
    free(sk);

    /* Without symmetry operations only Friedel pairs merge: (100), (010),
     * (001) are three families of 2 at the same angle. */
    pid_structure *p1 = mk_structure(4.0, 4.0, 4.0, 90, 90, 90, &po, 1, NULL, 0);
    assert_int_equal(pid_xrd_sticks(p1, &o, &sk, &n, &err), PID_OK);
    int n100 = 0;
    for (int i = 0; i < n; i++) {
        assert_int_equal(sk[i].multiplicity, 2);
        if (fabs(sk[i].d_angstrom - 4.0) < 1e-9) n100++;
    }
    assert_int_equal(n100, 3);
    free(sk);
    free_structure(p1);
    free_structure(s);
}

/* Hexagonal: operations of P6_3/mmc from spglib's database (through the
 * structure module), hcp Mg a = 3.2094, c = 5.2108 A. 6/mmm multiplicities:
 * {100} 6, {002} 2, {101} 12, {110} 6, {102} 12, {112} 12, {211} 24. */
static void test_hexagonal_multiplicities(void **state)
{
    (void)state;
    int n_ops = 0;
    int(*rot)[3][3] = NULL;
    double(*trans)[3] = NULL;
    pid_error err;
    assert_int_equal(pid_spacegroup_ops(NULL, NULL, 194, &n_ops, &rot, &trans, &err), PID_OK);
    assert_int_equal(n_ops, 24);
    site_spec sp[2] = {{12, 1.0 / 3, 2.0 / 3, 0.25, 1, 0}, {12, 2.0 / 3, 1.0 / 3, 0.75, 1, 0}};
    pid_structure *s =
        mk_structure(3.2094, 3.2094, 5.2108, 90, 90, 120, sp, 2, (const int(*)[3][3])rot, n_ops);
    free(rot);
    free(trans);
    pid_xrd_opts o = opts_single(1.540562, 10, 120, PID_LP_LAB);
    pid_xrd_stick *sk = NULL;
    int n = 0;
    assert_int_equal(pid_xrd_sticks(s, &o, &sk, &n, &err), PID_OK);
    const struct {
        int h, k, l, m;
    } ref[] = {{1, 0, 0, 6},  {0, 0, 2, 2},  {1, 0, 1, 12}, {1, 1, 0, 6},
               {1, 0, 2, 12}, {1, 1, 2, 12}, {2, 0, 1, 12}, {2, 1, 1, 24}};
    for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++) {
        const pid_xrd_stick *p = find_exact(sk, n, ref[i].h, ref[i].k, ref[i].l);
        assert_non_null(p);
        assert_int_equal(p->multiplicity, ref[i].m);
        /* 1/d^2 = 4/3 (h^2+hk+k^2)/a^2 + l^2/c^2 */
        double a = 3.2094, c = 5.2108;
        double q = 4.0 / 3.0 * (ref[i].h * ref[i].h + ref[i].h * ref[i].k + ref[i].k * ref[i].k) /
                       (a * a) +
                   ref[i].l * ref[i].l / (c * c);
        assert_true(fabs(p->d_angstrom - 1.0 / sqrt(q)) < 1e-6);
    }
    /* hcp: (001) forbidden by the 6_3 screw axis (00l, l odd). */
    assert_null(find_exact(sk, n, 0, 0, 1));
    free(sk);
    free_structure(s);
}

/* -------------------------------------------------- systematic absences */

static int present(const k_xrd_refl *r, int n, int h, int k, int l)
{
    int want[3] = {abs(h), abs(k), abs(l)};
    for (int i = 0; i < n; i++) {
        int g[3] = {abs((int)r[i].hkl[0]), abs((int)r[i].hkl[1]), abs((int)r[i].hkl[2])};
        /* cubic families: same multiset of |indices| <=> same elementary
         * symmetric polynomials (sum, sum of squares, product) */
        int sw = want[0] + want[1] + want[2], sg = g[0] + g[1] + g[2];
        int pw = want[0] * want[0] + want[1] * want[1] + want[2] * want[2];
        int pg = g[0] * g[0] + g[1] * g[1] + g[2] * g[2];
        int cw = want[0] * want[1] * want[2], cg = g[0] * g[1] * g[2];
        if (sw == sg && pw == pg && cw == cg) return 1; /* same multiset */
    }
    return 0;
}

static void test_systematic_absences(void **state)
{
    (void)state;
    pid_error err;
    k_xrd_refl *r = NULL;
    int n = 0;

    /* fcc Cu (a = 3.615): only h,k,l all even or all odd. */
    site_spec cu[4] = {
        {29, 0, 0, 0, 1, 0}, {29, 0, .5, .5, 1, 0}, {29, .5, 0, .5, 1, 0}, {29, .5, .5, 0, 1, 0}};
    pid_structure *s = mk_cubic(3.615, cu, 4);
    assert_int_equal(pid_xrd_reflections(s, 0.7, 0, &r, &n, &err), PID_OK);
    for (int i = 0; i < n; i++) {
        int h = (int)r[i].hkl[0], k = (int)r[i].hkl[1], l = (int)r[i].hkl[2];
        int odd = (h & 1) + (k & 1) + (l & 1);
        assert_true(odd == 0 || odd == 3);
    }
    assert_true(present(r, n, 1, 1, 1) && present(r, n, 2, 0, 0) && present(r, n, 2, 2, 0));
    assert_false(present(r, n, 1, 0, 0) || present(r, n, 1, 1, 0) || present(r, n, 2, 1, 0));
    free(r);
    free_structure(s);

    /* Diamond Si: fcc rules plus h+k+l = 4n+2 absent when all even: 200, 222,
     * 420 absent with spherical atoms, 400 and 220 present. */
    s = mk_si(0.0);
    assert_int_equal(pid_xrd_reflections(s, 0.8, 0, &r, &n, &err), PID_OK);
    assert_true(present(r, n, 1, 1, 1) && present(r, n, 2, 2, 0) && present(r, n, 3, 1, 1) &&
                present(r, n, 4, 0, 0));
    assert_false(present(r, n, 2, 0, 0) || present(r, n, 2, 2, 2) || present(r, n, 4, 2, 0) ||
                 present(r, n, 1, 0, 0));
    /* Independent closed form: |F(111)|^2 = 32 f^2, |F(220)|^2 = 64 f^2. */
    for (int i = 0; i < n; i++) {
        int h = abs((int)r[i].hkl[0]), k = abs((int)r[i].hkl[1]), l = abs((int)r[i].hkl[2]);
        double d = 5.4307 / sqrt((double)(h * h + k * k + l * l));
        double f = pid_xrd_form_factor(14, 0.5 / d);
        double f2 = -1;
        if (h == 1 && k == 1 && l == 1) f2 = 32 * f * f * 8;
        if (h == 2 && k == 2 && l == 0) f2 = 64 * f * f * 12;
        if (f2 > 0) assert_true(fabs(r[i].f2m - f2) < 1e-5 * f2);
    }
    free(r);
    free_structure(s);

    /* bcc Fe (a = 2.8665): h+k+l odd absent. */
    site_spec fe[2] = {{26, 0, 0, 0, 1, 0}, {26, .5, .5, .5, 1, 0}};
    s = mk_cubic(2.8665, fe, 2);
    assert_int_equal(pid_xrd_reflections(s, 0.7, 0, &r, &n, &err), PID_OK);
    for (int i = 0; i < n; i++)
        assert_int_equal(((int)r[i].hkl[0] + (int)r[i].hkl[1] + (int)r[i].hkl[2]) & 1, 0);
    assert_true(present(r, n, 1, 1, 0) && present(r, n, 2, 0, 0) && present(r, n, 2, 1, 1));
    assert_false(present(r, n, 1, 0, 0) || present(r, n, 1, 1, 1) || present(r, n, 2, 1, 0));
    free(r);
    free_structure(s);
}

/* CsCl (a = 4.123): F(h+k+l even) = f_Cs + f_Cl, F(odd) = f_Cs - f_Cl. */
static void test_cscl_structure_factor(void **state)
{
    (void)state;
    site_spec sp[2] = {{55, 0, 0, 0, 1, 0}, {17, .5, .5, .5, 1, 0}};
    pid_structure *s = mk_cubic(4.123, sp, 2);
    pid_xrd_opts o = opts_single(1.540562, 5, 120, PID_LP_LAB);
    pid_xrd_stick *sk = NULL;
    int n = 0;
    pid_error err;
    assert_int_equal(pid_xrd_sticks(s, &o, &sk, &n, &err), PID_OK);
    assert_true(n > 8);
    for (int i = 0; i < n; i++) {
        double sv = 0.5 / sk[i].d_angstrom;
        double fcs = pid_xrd_form_factor(55, sv), fcl = pid_xrd_form_factor(17, sv);
        double f = ((sk[i].h + sk[i].k + sk[i].l) & 1) ? fcs - fcl : fcs + fcl;
        assert_true(fabs(sk[i].f2 - f * f) < 1e-9 * f * f);
    }
    free(sk);
    free_structure(s);
}

/* Debye-Waller: with one element and B on every atom, |F|^2 scales by
 * exp(-2 B s^2), s = 1/(2d). */
static void test_debye_waller(void **state)
{
    (void)state;
    const double b = 0.8;
    pid_structure *s0 = mk_si(b);
    pid_xrd_opts o = opts_single(1.540562, 10, 140, PID_LP_LAB);
    pid_xrd_stick *with = NULL, *without = NULL;
    int nw = 0, nn = 0;
    pid_error err;
    o.debye_waller = 1;
    assert_int_equal(pid_xrd_sticks(s0, &o, &with, &nw, &err), PID_OK);
    o.debye_waller = 0;
    assert_int_equal(pid_xrd_sticks(s0, &o, &without, &nn, &err), PID_OK);
    assert_int_equal(nw, nn);
    for (int i = 0; i < nw; i++) {
        double sv = 0.5 / with[i].d_angstrom;
        double want = without[i].f2 * exp(-2 * b * sv * sv);
        assert_true(fabs(with[i].f2 - want) < 1e-9 * want);
    }
    free(with);
    free(without);
    free_structure(s0);
}

/* ---------------------------------------------------------------- LP */

static void test_lp(void **state)
{
    (void)state;
    pid_lp lab = {PID_LP_LAB, 0.0, 0.0};
    /* Hand-computed (1 + cos^2 2t)/(sin^2 t cos t). */
    const double tt[4] = {30, 60, 90, 120};
    const double want[4] = {27.045923136, 5.773502692, 2.828427125, 3.333333333};
    for (int i = 0; i < 4; i++)
        assert_true(fabs(pid_xrd_lp_factor(&lab, tt[i]) - want[i]) < 1e-8 * want[i]);

    /* Monochromator 2t_m = 26.6 deg (graphite 002, Cu), formula evaluated here. */
    pid_lp mono = {PID_LP_LAB, 26.6, 0.0};
    for (double t2 = 10; t2 < 170; t2 += 7.5) {
        double t = 0.5 * t2 * DEG, c2 = cos(t2 * DEG), cm = cos(26.6 * DEG);
        double w = (1 + c2 * c2 * cm * cm) / (sin(t) * sin(t) * cos(t) * (1 + cm * cm));
        assert_true(fabs(pid_xrd_lp_factor(&mono, t2) - w) < 1e-12 * w);
    }
    /* Synchrotron, scattering plane perpendicular to E: fully polarized
     * (p = 1) has no polarization loss, P = 1; p = 0.5 is unpolarized and
     * equals half the lab value; general p: p + (1-p) cos^2 2t. */
    pid_lp syn1 = {PID_LP_SYNCHROTRON, 0.0, 1.0};
    pid_lp syn05 = {PID_LP_SYNCHROTRON, 0.0, 0.5};
    pid_lp syn95 = {PID_LP_SYNCHROTRON, 0.0, 0.95};
    for (double t2 = 5; t2 < 175; t2 += 10) {
        double t = 0.5 * t2 * DEG, l = 1.0 / (sin(t) * sin(t) * cos(t)), c2 = cos(t2 * DEG);
        assert_true(fabs(pid_xrd_lp_factor(&syn1, t2) - l) < 1e-12 * l);
        double half = 0.5 * pid_xrd_lp_factor(&lab, t2);
        assert_true(fabs(pid_xrd_lp_factor(&syn05, t2) - half) < 1e-12 * half);
        double w95 = (0.95 + 0.05 * c2 * c2) * l;
        assert_true(fabs(pid_xrd_lp_factor(&syn95, t2) - w95) < 1e-12 * w95);
    }
    assert_true(fabs(pid_xrd_lp_factor(&syn1, 90.0) - 2.828427125) < 1e-8);
    pid_lp none = {PID_LP_NONE, 0.0, 0.0};
    assert_true(pid_xrd_lp_factor(&none, 33.0) == 1.0);
}

/* ---------------------------------------------------------- form factors */

/* Cromer-Mann 4-Gaussian f0 with coefficients from International Tables
 * Vol. C, Table 6.1.1.4: an independent parametrization to check xraylib's
 * Hubbell f0 against. */
static double cromer_mann(const double c[9], double s)
{
    double s2 = s * s, f = c[8];
    for (int i = 0; i < 4; i++)
        f += c[2 * i] * exp(-c[2 * i + 1] * s2);
    return f;
}

static void test_form_factor(void **state)
{
    (void)state;
    const int zs[4] = {1, 8, 26, 92};
    for (int i = 0; i < 4; i++)
        assert_true(fabs(pid_xrd_form_factor(zs[i], 0.0) - zs[i]) < 0.05);
    /* Cu at s = 0.5: IT Vol. C gives f0 = 13.70 (4-Gaussian, Table 6.1.1.4)
     * and 13.6-13.7 tabulated (Table 6.1.1.1); xraylib gives 13.67. (~11.5
     * is iron's value at s = 0.5, checked below.) */
    const double cu[9] = {13.338, 3.5828, 7.1676, 0.247, 5.6158, 11.3966, 1.6735, 64.8126, 1.191};
    const double fe[9] = {11.7695, 4.7611, 7.3573,  0.3072, 3.5222,
                          15.3535, 2.3045, 76.8805, 1.0369};
    assert_true(fabs(cromer_mann(cu, 0.5) - 13.70) < 0.01); /* the reference itself */
    assert_true(fabs(pid_xrd_form_factor(29, 0.5) - cromer_mann(cu, 0.5)) < 0.1);
    assert_true(fabs(pid_xrd_form_factor(26, 0.5) - cromer_mann(fe, 0.5)) < 0.1);
    /* The two parametrizations agree over the usual range (Cromer-Mann is
     * fitted to 2 1/A; 0.1 electron is the fit's quoted accuracy scale). */
    for (double sv = 0.0; sv <= 1.0; sv += 0.05) {
        assert_true(fabs(pid_xrd_form_factor(29, sv) - cromer_mann(cu, sv)) < 0.15);
        assert_true(fabs(pid_xrd_form_factor(26, sv) - cromer_mann(fe, sv)) < 0.15);
    }
    /* Sn, a heavier atom: xraylib and IT agree within 0.25 electron up to
     * s = 1 (f0(0.4) = 30.0), where pymatgen's Mott-Bethe-converted electron
     * fit gives 32.9; why its SnO2 intensities differ from ours by ~4 %. */
    const double sn[9] = {19.1889, 5.8303, 19.1005, 0.5031, 4.4585,
                          26.8909, 2.4663, 83.9571, 4.7821};
    assert_true(fabs(cromer_mann(sn, 0.4) - 30.02) < 0.01);
    for (double sv = 0.0; sv <= 1.0; sv += 0.05)
        assert_true(fabs(pid_xrd_form_factor(50, sv) - cromer_mann(sn, sv)) < 0.25);
    assert_true(isnan(pid_xrd_form_factor(0, 0.1)));
    assert_true(isnan(pid_xrd_form_factor(29, -0.1)));
    assert_true(isnan(pid_xrd_form_factor(29, NAN)));
}

/* -------------------------------------------------------------- texture */

static void check_weights(const k_xrd_refl *r, int n)
{
    for (int i = 0; i < n; i++)
        for (int ax = 0; ax < PID_TEX_AXES; ax++) {
            double sum = 0.0;
            for (int j = 0; j < PID_TEX_NCOS; j++) {
                assert_true(r[i].tex_w[ax][j] >= 0.0f);
                assert_true(r[i].tex_cos2[ax][j] >= 0.0f && r[i].tex_cos2[ax][j] <= 1.0f + 1e-6f);
                sum += r[i].tex_w[ax][j];
            }
            assert_true(fabs(sum - 1.0) < 1e-5);
        }
}

/* Weight of cos^2 value c for axis ax (0 if not listed). */
static double tex_weight_at(const k_xrd_refl *r, int ax, double c)
{
    double w = 0.0;
    for (int j = 0; j < PID_TEX_NCOS; j++)
        if (r->tex_w[ax][j] > 0 && fabs(r->tex_cos2[ax][j] - c) < 1e-5) w += r->tex_w[ax][j];
    return w;
}

static void test_reflections_texture(void **state)
{
    (void)state;
    site_spec po = {29, 0, 0, 0, 1, 0};
    pid_structure *s = mk_cubic(4.0, &po, 1);
    k_xrd_refl *r = NULL;
    int n = 0;
    pid_error err;
    assert_int_equal(pid_xrd_reflections(s, 0.6, 1, &r, &n, &err), PID_OK);
    assert_true(n > 20);
    check_weights(r, n);
    /* Sorted by d descending: 1/d^2 = (h^2+k^2+l^2)/a^2 non-decreasing. */
    for (int i = 1; i < n; i++) {
        double q0 = r[i - 1].hkl[0] * r[i - 1].hkl[0] + r[i - 1].hkl[1] * r[i - 1].hkl[1] +
                    r[i - 1].hkl[2] * r[i - 1].hkl[2];
        double q1 =
            r[i].hkl[0] * r[i].hkl[0] + r[i].hkl[1] * r[i].hkl[1] + r[i].hkl[2] * r[i].hkl[2];
        assert_true(q1 >= q0);
    }
    /* {100}: axis [001]* -> 2 of 6 members parallel (cos^2 = 1), 4 normal
     * (0). Axis [111]* -> all 6 at cos^2 = 1/3. {111}, axis [111]* -> 2 of 8
     * at 1, 6 at 1/9; axis [001]* -> all at 1/3. Axis [110]* and {110}: 2 of
     * 12 at 1, 2 at 0, 8 at 1/4. */
    assert_true(r[0].hkl[0] == 1 && r[0].hkl[1] == 0 && r[0].hkl[2] == 0);
    assert_true(fabs(r[0].f2m - 6 * pow(pid_xrd_form_factor(29, 0.125), 2)) < 1e-3 * r[0].f2m);
    assert_true(fabs(tex_weight_at(&r[0], 0, 1.0) - 1.0 / 3) < 1e-6);
    assert_true(fabs(tex_weight_at(&r[0], 0, 0.0) - 2.0 / 3) < 1e-6);
    assert_true(fabs(tex_weight_at(&r[0], 3, 1.0 / 3) - 1.0) < 1e-6);
    const k_xrd_refl *r110 = &r[1], *r111 = &r[2];
    assert_true(r110->hkl[0] == 1 && r110->hkl[1] == 1 && r110->hkl[2] == 0);
    assert_true(r111->hkl[0] == 1 && r111->hkl[1] == 1 && r111->hkl[2] == 1);
    assert_true(fabs(tex_weight_at(r111, 3, 1.0) - 0.25) < 1e-6);
    assert_true(fabs(tex_weight_at(r111, 3, 1.0 / 9) - 0.75) < 1e-6);
    assert_true(fabs(tex_weight_at(r111, 0, 1.0 / 3) - 1.0) < 1e-6);
    assert_true(fabs(tex_weight_at(r110, 2, 1.0) - 2.0 / 12) < 1e-6);
    assert_true(fabs(tex_weight_at(r110, 2, 0.0) - 2.0 / 12) < 1e-6);
    assert_true(fabs(tex_weight_at(r110, 2, 0.25) - 8.0 / 12) < 1e-6);
    /* The March-Dollase average over members is kept for every family even
     * where distinct angles had to be merged (r = 0.7, bound 2 %). */
    for (int i = 0; i < n; i++)
        for (int ax = 0; ax < PID_TEX_AXES; ax++) {
            double rr = 0.7, avg_tab = 0.0;
            for (int j = 0; j < PID_TEX_NCOS; j++) {
                double c2 = r[i].tex_cos2[ax][j];
                avg_tab += r[i].tex_w[ax][j] * pow(rr * rr * c2 + (1 - c2) / rr, -1.5);
            }
            /* exact average over the 48 signed permutations of (h,k,l) */
            static const int axes[4][3] = {{0, 0, 1}, {1, 0, 0}, {1, 1, 0}, {1, 1, 1}};
            int rot[48][3][3];
            cubic_ops(rot);
            int h[3] = {(int)r[i].hkl[0], (int)r[i].hkl[1], (int)r[i].hkl[2]};
            double avg = 0.0;
            for (int o = 0; o < 48; o++) {
                double m[3] = {0, 0, 0}, dot = 0, hh = 0, uu = 0;
                for (int j = 0; j < 3; j++)
                    for (int q = 0; q < 3; q++)
                        m[j] += h[q] * rot[o][q][j];
                for (int j = 0; j < 3; j++) {
                    dot += m[j] * axes[ax][j];
                    hh += m[j] * m[j];
                    uu += axes[ax][j] * axes[ax][j];
                }
                double c2 = dot * dot / (hh * uu);
                avg += pow(rr * rr * c2 + (1 - c2) / rr, -1.5) / 48.0;
            }
            assert_true(fabs(avg_tab - avg) < 0.02 * avg);
        }
    free(r);
    free_structure(s);

    /* Hexagonal cell, 6/mmm from spglib: weights still sum to 1; G* enters
     * the angles ({001}: along [001]* exactly). */
    int n_ops = 0;
    int(*rot)[3][3] = NULL;
    double(*trans)[3] = NULL;
    assert_int_equal(pid_spacegroup_ops(NULL, NULL, 194, &n_ops, &rot, &trans, &err), PID_OK);
    site_spec sp[2] = {{12, 1.0 / 3, 2.0 / 3, 0.25, 1, 0}, {12, 2.0 / 3, 1.0 / 3, 0.75, 1, 0}};
    pid_structure *hx =
        mk_structure(3.2094, 3.2094, 5.2108, 90, 90, 120, sp, 2, (const int(*)[3][3])rot, n_ops);
    free(rot);
    free(trans);
    assert_int_equal(pid_xrd_reflections(hx, 0.7, 0, &r, &n, &err), PID_OK);
    check_weights(r, n);
    int seen002 = 0;
    for (int i = 0; i < n; i++)
        if (r[i].hkl[0] == 0 && r[i].hkl[1] == 0 && r[i].hkl[2] == 2) {
            seen002 = 1;
            assert_true(fabs(tex_weight_at(&r[i], 0, 1.0) - 1.0) < 1e-6);
            /* [100]* is perpendicular to c*, so {00l} is at 90 deg. */
            assert_true(fabs(tex_weight_at(&r[i], 1, 0.0) - 1.0) < 1e-6);
        }
    assert_true(seen002);
    free(r);
    free_structure(hx);
}

/* ------------------------------------------------------------- errors */

static void test_errors(void **state)
{
    (void)state;
    pid_error err;
    static pid_xrd_stick dummy;
    pid_xrd_stick *sk = &dummy; /* must be reset to NULL */
    int n = 7;
    pid_xrd_opts o;
    pid_xrd_opts_default(&o);
    assert_int_equal(pid_xrd_sticks(NULL, &o, &sk, &n, &err), PID_ERR_ARG);
    assert_null(sk);
    assert_int_equal(n, 0);

    pid_structure *si = mk_si(0.0);
    pid_xrd_opts bad = o;
    bad.two_theta_max_deg = 185;
    assert_int_equal(pid_xrd_sticks(si, &bad, &sk, &n, &err), PID_ERR_ARG);
    bad = o;
    bad.two_theta_min_deg = NAN;
    assert_int_equal(pid_xrd_sticks(si, &bad, &sk, &n, &err), PID_ERR_ARG);
    bad = o;
    bad.lp.mode = PID_LP_SYNCHROTRON;
    bad.lp.polarization = 1.5;
    assert_int_equal(pid_xrd_sticks(si, &bad, &sk, &n, &err), PID_ERR_ARG);
    bad = o;
    bad.min_rel_intensity = -1;
    assert_int_equal(pid_xrd_sticks(si, &bad, &sk, &n, &err), PID_ERR_ARG);

    k_xrd_refl *r = NULL;
    assert_int_equal(pid_xrd_reflections(si, 0.0, 0, &r, &n, &err), PID_ERR_ARG);
    assert_int_equal(pid_xrd_reflections(si, NAN, 0, &r, &n, &err), PID_ERR_ARG);
    assert_int_equal(pid_xrd_reflections(si, 1e-4, 0, &r, &n, &err), PID_ERR_ARG); /* too many */
    assert_null(r);

    si->n_sites = 0;
    assert_int_equal(pid_xrd_reflections(si, 1.0, 0, &r, &n, &err), PID_ERR_FORMAT);
    si->n_sites = 8;
    si->sites[3].z = 0;
    assert_int_equal(pid_xrd_reflections(si, 1.0, 0, &r, &n, &err), PID_ERR_FORMAT);
    assert_true(strlen(err.msg) > 10);
    free_structure(si);

    /* A range holding no reflection is not an error: zero sticks. */
    site_spec po = {29, 0, 0, 0, 1, 0};
    pid_structure *s = mk_cubic(4.0, &po, 1);
    o.two_theta_min_deg = 5;
    o.two_theta_max_deg = 10; /* d(100) = 4 A is at 22.2 deg */
    assert_int_equal(pid_xrd_sticks(s, &o, &sk, &n, &err), PID_OK);
    assert_int_equal(n, 0);
    assert_null(sk);
    free_structure(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_source_parse),
        cmocka_unit_test(test_si_bragg_positions),
        cmocka_unit_test(test_cubic_multiplicities),
        cmocka_unit_test(test_hexagonal_multiplicities),
        cmocka_unit_test(test_systematic_absences),
        cmocka_unit_test(test_cscl_structure_factor),
        cmocka_unit_test(test_debye_waller),
        cmocka_unit_test(test_lp),
        cmocka_unit_test(test_form_factor),
        cmocka_unit_test(test_reflections_texture),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
