/* Crystal structures: cell geometry (metric tensors, volume, density), the
 * reduced formula, element look-up through xraylib, space-group operations
 * from spglib's database, and symmetry expansion of an asymmetric unit. */
#include "synth/structure.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spglib.h>
#include <xraylib.h>

#include "core/log.h"

#define MAX_Z 98
/* amu -> g and angstrom^3 -> cm^3 folded into one factor: 1.66054e-24 g / 1e-24 cm^3. */
#define AMU_PER_A3_TO_G_PER_CM3 1.66054
/* spglib's distance tolerance (angstrom) tried first; 0.01 is pymatgen's
 * SpacegroupAnalyzer default, so our space groups agree with what users see. */
#define SYMPREC_A 0.01
/* spglib's search grows steeply with cell size (1920 atoms: 0.3 s, 3744:
 * 10 s, 19584: 6.5 min in spglib 2.0's overlap checks), so bigger cells keep
 * the operations they were expanded with instead of a symmetry search. */
#define SPGLIB_MAX_ATOMS 2000
/* Sites whose occupancies differ by less than this are the same spglib type. */
#define OCC_QUANTUM 1e-4

/* ------------------------------------------------------------------------ */
/* Elements                                                                 */

/* Pauling electronegativities for Z = 1..98 (0 = none defined: He, Ne, Ar).
 * Source: the Pauling-scale values tabulated in the CRC Handbook of Chemistry
 * and Physics / WebElements, which are also the values pymatgen's periodic
 * table carries; they are used only to order elements in formulas the way
 * pymatgen's reduced_formula does. */
static const double pauling_x[MAX_Z + 1] = {
    0,    2.2,  0,    0.98, 1.57, 2.04, 2.55, 3.04, 3.44, 3.98, 0,    0.93, 1.31, 1.61, 1.9,
    2.19, 2.58, 3.16, 0,    0.82, 1,    1.36, 1.54, 1.63, 1.66, 1.55, 1.83, 1.88, 1.91, 1.9,
    1.65, 1.81, 2.01, 2.18, 2.55, 2.96, 3,    0.82, 0.95, 1.22, 1.33, 1.6,  2.16, 1.9,  2.2,
    2.28, 2.2,  1.93, 1.69, 1.78, 1.96, 2.05, 2.1,  2.66, 2.6,  0.79, 0.89, 1.1,  1.12, 1.13,
    1.14, 1.13, 1.17, 1.2,  1.2,  1.1,  1.22, 1.23, 1.24, 1.25, 1.1,  1.27, 1.3,  1.5,  2.36,
    1.9,  2.2,  2.2,  2.28, 2.54, 2,    1.62, 2.33, 2.02, 2,    2.2,  2.2,  0.7,  0.9,  1.1,
    1.3,  1.5,  1.38, 1.36, 1.28, 1.3,  1.3,  1.3,  1.3};

/* Element symbols are read once from xraylib so that pid_element_symbol can
 * hand out stable const strings. */
static char element_symbols[MAX_Z + 1][4];
static pthread_once_t element_once = PTHREAD_ONCE_INIT;

static void element_table_init(void)
{
    for (int z = 1; z <= MAX_Z; z++) {
        char *sym = AtomicNumberToSymbol(z, NULL);
        if (sym) {
            snprintf(element_symbols[z], sizeof element_symbols[z], "%s", sym);
            xrlFree(sym);
        }
    }
}

const char *pid_element_symbol(int z)
{
    if (z < 1 || z > MAX_Z) return "";
    pthread_once(&element_once, element_table_init);
    return element_symbols[z];
}

double pid_element_mass(int z)
{
    if (z < 1 || z > MAX_Z) return 0.0;
    double w = AtomicWeight(z, NULL); /* 0 on error, which callers treat as unknown */
    return w > 0 ? w : 0.0;
}

/* Exact, case-sensitive symbol ("Mn") -> Z in 1..98, or 0. Deuterium counts
 * as hydrogen: it scatters X-rays the same way. */
static int symbol_z(const char *sym)
{
    if (!strcmp(sym, "D")) return 1;
    int z = SymbolToAtomicNumber(sym, NULL);
    return (z >= 1 && z <= MAX_Z) ? z : 0;
}

/* Charge suffix after the element symbol: "3+", "2-", "+", "-", "+3", "-2".
 * Non-integer oxidation states ("3.5+", written by pymatgen for mixed
 * valence) and anything else give 0: the neutral atom is the best model then. */
static int parse_charge(const char *r)
{
    size_t n = strlen(r);
    if (n == 0) return 0;
    int sign = 0;
    const char *digits = r;
    size_t nd = 0;
    if (r[n - 1] == '+' || r[n - 1] == '-') {
        sign = r[n - 1] == '+' ? 1 : -1;
        nd = n - 1;
    } else if (r[0] == '+' || r[0] == '-') {
        sign = r[0] == '+' ? 1 : -1;
        digits = r + 1;
        nd = n - 1;
    } else {
        return 0; /* "1", "1a": a site number, not a charge */
    }
    if (nd == 0) return sign;
    int v = 0;
    for (size_t i = 0; i < nd; i++) {
        if (!isdigit((unsigned char)digits[i])) return 0;
        v = v * 10 + (digits[i] - '0');
        if (v > 9) return 0;
    }
    return sign * v;
}

int pid_element_z(const char *label, int *charge)
{
    if (charge) *charge = 0;
    if (!label) return 0;
    const char *p = label;
    while (isspace((unsigned char)*p))
        p++;
    if (!isalpha((unsigned char)p[0])) return 0;
    size_t run = 0;
    while (isalpha((unsigned char)p[run]))
        run++;

    int z = 0;
    size_t used = 0;
    /* Two-letter symbols: "Mn", or all-caps "MN"/"FE1" when the letters stop
     * there (so "OW1" stays oxygen rather than becoming "Ow"). */
    if (run >= 2 && (islower((unsigned char)p[1]) || run == 2)) {
        char sym[3] = {(char)toupper((unsigned char)p[0]), (char)tolower((unsigned char)p[1]), 0};
        z = symbol_z(sym);
        if (z) used = 2;
    }
    if (!z) {
        char sym[2] = {(char)toupper((unsigned char)p[0]), 0};
        z = symbol_z(sym);
        used = 1;
        /* "Wat", "Oxygen": a word, not an element label. */
        if (z && run >= 3) z = 0;
    }
    if (!z) return 0;

    if (charge) {
        /* Trim trailing blanks before reading the charge suffix. */
        char rest[16];
        size_t m = strlen(p + used);
        while (m > 0 && isspace((unsigned char)p[used + m - 1]))
            m--;
        if (m < sizeof rest) {
            memcpy(rest, p + used, m);
            rest[m] = '\0';
            *charge = parse_charge(rest);
        }
    }
    return z;
}

/* ------------------------------------------------------------------------ */
/* Lifetime                                                                 */

void pid_structure_clear(pid_structure *s)
{
    if (!s) return;
    free(s->rot);
    free(s->trans);
    free(s->sites);
    s->rot = NULL;
    s->trans = NULL;
    s->sites = NULL;
    s->n_ops = 0;
    s->n_sites = 0;
    s->n_asym = 0;
}

void pid_structure_destroy(pid_structure *s)
{
    if (!s) return;
    pid_structure_clear(s);
    free(s);
}

void pid_structure_array_destroy(pid_structure *arr, int n)
{
    if (!arr) return;
    for (int i = 0; i < n; i++)
        pid_structure_clear(&arr[i]);
    free(arr);
}

/* Deep copy of src into dst (dst's old contents are not freed). */
static pid_status copy_into(pid_structure *dst, const pid_structure *src, pid_error *err)
{
    *dst = *src;
    dst->rot = NULL;
    dst->trans = NULL;
    dst->sites = NULL;
    if (src->n_ops > 0) {
        dst->rot = malloc((size_t)src->n_ops * sizeof *dst->rot);
        dst->trans = malloc((size_t)src->n_ops * sizeof *dst->trans);
        if (!dst->rot || !dst->trans) goto nomem;
        memcpy(dst->rot, src->rot, (size_t)src->n_ops * sizeof *dst->rot);
        memcpy(dst->trans, src->trans, (size_t)src->n_ops * sizeof *dst->trans);
    }
    if (src->n_sites > 0) {
        dst->sites = malloc((size_t)src->n_sites * sizeof *dst->sites);
        if (!dst->sites) goto nomem;
        memcpy(dst->sites, src->sites, (size_t)src->n_sites * sizeof *dst->sites);
    }
    return PID_OK;
nomem:
    pid_structure_clear(dst);
    return pid_fail(err, PID_ERR_NOMEM, "out of memory copying structure '%s'", src->name);
}

pid_status pid_structure_clone(const pid_structure *src, pid_structure **out, pid_error *err)
{
    if (!src || !out) return pid_fail(err, PID_ERR_ARG, "pid_structure_clone: NULL argument");
    *out = NULL;
    pid_structure *s = calloc(1, sizeof *s);
    if (!s) return pid_fail(err, PID_ERR_NOMEM, "out of memory copying structure '%s'", src->name);
    pid_status st = copy_into(s, src, err);
    if (st) {
        free(s);
        return st;
    }
    *out = s;
    return PID_OK;
}

/* ------------------------------------------------------------------------ */
/* Geometry                                                                 */

/* cos of an angle in degrees, exact for the angles cells usually have, so
 * that orthogonal cells get exactly diagonal metric tensors. */
static double cos_deg(double deg)
{
    if (deg == 90.0) return 0.0;
    if (deg == 120.0) return -0.5;
    if (deg == 60.0) return 0.5;
    return cos(deg * M_PI / 180.0);
}

static double sin_deg(double deg)
{
    if (deg == 90.0) return 1.0;
    return sin(deg * M_PI / 180.0);
}

double pid_structure_volume(const pid_structure *s)
{
    if (!s) return 0.0;
    double ca = cos_deg(s->alpha), cb = cos_deg(s->beta), cg = cos_deg(s->gamma);
    double f = 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg;
    double v = s->a * s->b * s->c * sqrt(f > 0 ? f : 0);
    if (!(f > 0) || !(s->a > 0) || !(s->b > 0) || !(s->c > 0) || !isfinite(v)) return 0.0;
    return v;
}

void pid_structure_metric(const pid_structure *s, double g[3][3])
{
    double ca = cos_deg(s->alpha), cb = cos_deg(s->beta), cg = cos_deg(s->gamma);
    g[0][0] = s->a * s->a;
    g[1][1] = s->b * s->b;
    g[2][2] = s->c * s->c;
    g[0][1] = g[1][0] = s->a * s->b * cg;
    g[0][2] = g[2][0] = s->a * s->c * cb;
    g[1][2] = g[2][1] = s->b * s->c * ca;
}

void pid_structure_reciprocal_metric(const pid_structure *s, double gstar[3][3])
{
    double g[3][3];
    pid_structure_metric(s, g);
    /* Inverse by cofactors; det(G) = V^2. */
    double det = g[0][0] * (g[1][1] * g[2][2] - g[1][2] * g[2][1]) -
                 g[0][1] * (g[1][0] * g[2][2] - g[1][2] * g[2][0]) +
                 g[0][2] * (g[1][0] * g[2][1] - g[1][1] * g[2][0]);
    if (!(det > 0) || !isfinite(det)) {
        memset(gstar, 0, 9 * sizeof(double));
        return;
    }
    gstar[0][0] = (g[1][1] * g[2][2] - g[1][2] * g[2][1]) / det;
    gstar[0][1] = (g[0][2] * g[2][1] - g[0][1] * g[2][2]) / det;
    gstar[0][2] = (g[0][1] * g[1][2] - g[0][2] * g[1][1]) / det;
    gstar[1][0] = gstar[0][1];
    gstar[1][1] = (g[0][0] * g[2][2] - g[0][2] * g[2][0]) / det;
    gstar[1][2] = (g[0][2] * g[1][0] - g[0][0] * g[1][2]) / det;
    gstar[2][0] = gstar[0][2];
    gstar[2][1] = gstar[1][2];
    gstar[2][2] = (g[0][0] * g[1][1] - g[0][1] * g[1][0]) / det;
}

/* Cartesian basis vectors as the columns of lat (spglib's convention):
 * a along x, b in the xy plane. */
static void cell_lattice(const pid_structure *s, double lat[3][3])
{
    double ca = cos_deg(s->alpha), cb = cos_deg(s->beta), cg = cos_deg(s->gamma);
    double sg = sin_deg(s->gamma);
    double cx = s->c * cb;
    double cy = s->c * (ca - cb * cg) / sg;
    double cz2 = s->c * s->c - cx * cx - cy * cy;
    double cz = cz2 > 0 ? sqrt(cz2) : 0.0;
    lat[0][0] = s->a, lat[0][1] = s->b * cg, lat[0][2] = cx;
    lat[1][0] = 0.0, lat[1][1] = s->b * sg, lat[1][2] = cy;
    lat[2][0] = 0.0, lat[2][1] = 0.0, lat[2][2] = cz;
}

double pid_structure_cell_mass(const pid_structure *s)
{
    if (!s) return 0.0;
    double m = 0.0;
    for (int i = 0; i < s->n_sites; i++)
        m += s->sites[i].occupancy * pid_element_mass(s->sites[i].z);
    return m;
}

double pid_structure_density(const pid_structure *s)
{
    double v = pid_structure_volume(s);
    if (!(v > 0)) return 0.0;
    return pid_structure_cell_mass(s) * AMU_PER_A3_TO_G_PER_CM3 / v;
}

/* ------------------------------------------------------------------------ */
/* Reduced formula                                                          */

static long gcd_l(long a, long b)
{
    if (a < 0) a = -a;
    if (b < 0) b = -b;
    while (b) {
        long t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Electronegativity with "none" sorted last, as pymatgen does. */
static double elneg(int z)
{
    return (z >= 1 && z <= MAX_Z && pauling_x[z] > 0) ? pauling_x[z] : INFINITY;
}

static int cmp_elements(const void *pa, const void *pb)
{
    int a = *(const int *)pa, b = *(const int *)pb;
    double xa = elneg(a), xb = elneg(b);
    if (xa < xb) return -1;
    if (xa > xb) return 1;
    return strcmp(pid_element_symbol(a), pid_element_symbol(b));
}

/* Append "Sym" or "SymN" (N omitted when 1) to buf. */
static void append_int(char *buf, size_t cap, const char *sym, long n)
{
    size_t len = strlen(buf);
    if (len >= cap) return;
    if (n == 1)
        snprintf(buf + len, cap - len, "%s", sym);
    else
        snprintf(buf + len, cap - len, "%s%ld", sym, n);
}

/* Reduced formula of the cell contents following pymatgen's
 * Composition.reduced_formula: elements ordered by Pauling electronegativity
 * (then symbol), amounts divided by their GCD, the two most electronegative
 * elements grouped as a polyanion "(OF3)2" when their electronegativities
 * differ by less than 1.65, and the peroxide/diatomic special cases
 * ("LiO" -> "Li2O2"). Non-integral (partially occupied) contents are divided
 * by the GCD of the per-element site counts and printed with at most three
 * decimals ("Fe0.95O"). Returns Z, the formula units per cell. */
static int reduced_formula(const pid_structure *s, char *out, size_t cap)
{
    double amount[MAX_Z + 1] = {0};
    long nsite[MAX_Z + 1] = {0};
    out[0] = '\0';
    for (int i = 0; i < s->n_sites; i++) {
        int z = s->sites[i].z;
        if (z < 1 || z > MAX_Z) continue;
        amount[z] += s->sites[i].occupancy;
        nsite[z]++;
    }
    int els[MAX_Z];
    int n = 0;
    for (int z = 1; z <= MAX_Z; z++)
        if (amount[z] > 1e-8) els[n++] = z;
    if (n == 0) return 0;
    qsort(els, (size_t)n, sizeof els[0], cmp_elements);

    int integral = 1;
    for (int i = 0; i < n; i++)
        if (fabs(amount[els[i]] - round(amount[els[i]])) > 1e-6) integral = 0;

    if (!integral) {
        long f = 0;
        for (int i = 0; i < n; i++)
            f = gcd_l(f, nsite[els[i]]);
        if (f < 1) f = 1;
        for (int i = 0; i < n; i++) {
            double v = amount[els[i]] / (double)f;
            char num[32];
            snprintf(num, sizeof num, "%.3f", v);
            /* Drop trailing zeros and a bare "1". */
            char *dot = strchr(num, '.');
            if (dot) {
                char *e = num + strlen(num) - 1;
                while (e > dot && *e == '0')
                    *e-- = '\0';
                if (e == dot) *e = '\0';
            }
            size_t len = strlen(out);
            if (len < cap)
                snprintf(out + len, cap - len, "%s%s", pid_element_symbol(els[i]),
                         strcmp(num, "1") ? num : "");
        }
        return (int)f;
    }

    long amt[MAX_Z];
    long factor = 0;
    for (int i = 0; i < n; i++) {
        amt[i] = lround(amount[els[i]]);
        factor = gcd_l(factor, amt[i]);
    }
    if (factor < 1) factor = 1;
    int n_main = n;
    char poly[64] = "";
    if (n >= 3 && elneg(els[n - 1]) - elneg(els[n - 2]) < 1.65) {
        long p1 = amt[n - 2] / factor, p2 = amt[n - 1] / factor;
        long pf = gcd_l(p1, p2);
        if (pf != 1) {
            snprintf(poly, sizeof poly, "(");
            append_int(poly, sizeof poly, pid_element_symbol(els[n - 2]), p1 / pf);
            append_int(poly, sizeof poly, pid_element_symbol(els[n - 1]), p2 / pf);
            size_t len = strlen(poly);
            snprintf(poly + len, sizeof poly - len, ")%ld", pf);
            n_main = n - 2;
        }
    }
    for (int i = 0; i < n_main; i++)
        append_int(out, cap, pid_element_symbol(els[i]), amt[i] / factor);
    size_t len = strlen(out);
    if (len < cap) snprintf(out + len, cap - len, "%s", poly);

    /* pymatgen keeps peroxides and diatomic elements as pairs. */
    static const char *const special[][2] = {
        {"LiO", "Li2O2"}, {"NaO", "Na2O2"}, {"KO", "K2O2"}, {"HO", "H2O2"},
        {"CsO", "Cs2O2"}, {"RbO", "Rb2O2"}, {"O", "O2"},    {"N", "N2"},
        {"F", "F2"},      {"Cl", "Cl2"},    {"H", "H2"},
    };
    if (factor % 2 == 0) {
        for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) {
            if (!strcmp(out, special[i][0])) {
                snprintf(out, cap, "%s", special[i][1]);
                factor /= 2;
                break;
            }
        }
    }
    return factor > INT32_MAX ? INT32_MAX : (int)factor;
}

int pid_structure_formula_units(const pid_structure *s)
{
    if (!s) return 0;
    char buf[PID_NAME_LEN * 4];
    return reduced_formula(s, buf, sizeof buf);
}

void pid_structure_update_formula(pid_structure *s)
{
    if (!s) return;
    /* Formulas longer than the field are cut, never overflowed. */
    reduced_formula(s, s->formula, sizeof s->formula);
}

/* ------------------------------------------------------------------------ */
/* Space-group database                                                     */

#define N_HALL 530

/* spglib's 530 settings, with symbols normalized for matching: lower case,
 * no spaces or underscores ("P 2_1/c" -> "p21/c"). */
typedef struct {
    int number;
    char choice[8];
    char hall[24];    /* lower case, single spaces (spaces matter in Hall symbols) */
    char full[32];    /* "p121/c1" */
    char setting[40]; /* setting symbols from 'international' ("pbnm", "p21/b") */
    char short_[16];  /* "p21/c" */
    char no_ones[32]; /* monoclinic full symbol without the 1s: "p21/n" */
} sg_entry;

static sg_entry sg_table[N_HALL + 1];
/* Short symbol of each number's standard setting ("Fm-3m"), as spglib spells it. */
static char sg_symbols[231][12];
static pthread_once_t sg_once = PTHREAD_ONCE_INIT;

static void norm_hm(const char *in, char *out, size_t cap)
{
    size_t j = 0;
    for (const char *p = in; *p && j + 1 < cap; p++) {
        unsigned char c = (unsigned char)*p;
        if (isspace(c) || c == '_') continue;
        out[j++] = (char)tolower(c);
    }
    out[j] = '\0';
}

static void norm_hall(const char *in, char *out, size_t cap)
{
    size_t j = 0;
    int space = 0;
    for (const char *p = in; *p && j + 1 < cap; p++) {
        unsigned char c = (unsigned char)*p;
        if (isspace(c) || c == '_') {
            space = j > 0;
            continue;
        }
        if (space && j + 2 < cap) out[j++] = ' ';
        space = 0;
        out[j++] = (char)tolower(c);
    }
    out[j] = '\0';
}

static void sg_table_init(void)
{
    for (int h = 1; h <= N_HALL; h++) {
        SpglibSpacegroupType t = spg_get_spacegroup_type(h);
        sg_entry *e = &sg_table[h];
        e->number = t.number;
        snprintf(e->choice, sizeof e->choice, "%s", t.choice);
        norm_hall(t.hall_symbol, e->hall, sizeof e->hall);
        norm_hm(t.international_full, e->full, sizeof e->full);
        norm_hm(t.international_short, e->short_, sizeof e->short_);
        /* 'international' reads "P 2_1/c = P 1 1 2_1/b = P 2_1/b" for
         * non-standard monoclinic settings; the pieces after the first '='
         * name this setting. Orthorhombic settings have one piece ("P b n m"). */
        const char *eq = strchr(t.international, '=');
        char piece[40];
        if (!eq) {
            norm_hm(t.international, e->setting, sizeof e->setting);
        } else {
            /* Keep the last piece: the shortest name of this setting. */
            const char *last = strrchr(t.international, '=');
            norm_hm(last + 1, piece, sizeof piece);
            snprintf(e->setting, sizeof e->setting, "%s", piece);
        }
        if (t.number >= 1 && t.number <= 230 && !sg_symbols[t.number][0])
            snprintf(sg_symbols[t.number], sizeof sg_symbols[t.number], "%s",
                     t.international_short);
        e->no_ones[0] = '\0';
        if (t.number >= 3 && t.number <= 15) {
            char tmp[32];
            size_t j = 0;
            const char *p = t.international_full;
            while (*p && j + 1 < sizeof tmp) {
                while (*p == ' ')
                    p++;
                const char *tok = p;
                while (*p && *p != ' ')
                    p++;
                size_t len = (size_t)(p - tok);
                if (len == 1 && tok[0] == '1') continue;
                if (j + len + 1 >= sizeof tmp) break;
                memcpy(tmp + j, tok, len);
                j += len;
                tmp[j++] = ' ';
            }
            tmp[j] = '\0';
            norm_hm(tmp, e->no_ones, sizeof e->no_ones);
        }
    }
}

/* Preference among equally good matches: origin choice 2 and hexagonal
 * axes for rhombohedral groups (what most CIFs and pymatgen assume), then
 * the lower Hall number (spglib lists the standard setting first). */
static int choice_rank(const char *choice)
{
    if (choice[0] == '2' || !strcmp(choice, "H")) return 0;
    return 1;
}

/* Split a trailing setting choice off a normalized H-M symbol: ":1", ":2",
 * ":h", ":r", ":s" (= origin 1), ":z" (= origin 2), a bare trailing "s"/"z",
 * or a bare trailing "h"/"r" after a rhombohedral symbol ("r-3mh"). Writes the wanted choice ('1',
 * '2', 'H', 'R') or 0. */
static char split_choice(char *hm)
{
    char *colon = strchr(hm, ':');
    char want = 0;
    if (colon) {
        char c = colon[1];
        if (c == '1' || c == 's')
            want = '1';
        else if (c == '2' || c == 'z')
            want = '2';
        else if (c == 'h')
            want = 'H';
        else if (c == 'r')
            want = 'R';
        *colon = '\0';
        return want;
    }
    size_t n = strlen(hm);
    /* "F d -3 m S" / "... Z": origin choice letters no H-M symbol ends in. */
    if (n > 2 && (hm[n - 1] == 's' || hm[n - 1] == 'z')) {
        want = hm[n - 1] == 's' ? '1' : '2';
        hm[n - 1] = '\0';
        return want;
    }
    if (n > 2 && hm[0] == 'r' && (hm[n - 1] == 'h' || hm[n - 1] == 'r')) {
        want = hm[n - 1] == 'h' ? 'H' : 'R';
        hm[n - 1] = '\0';
    }
    return want;
}

static int choice_matches(const char *choice, char want)
{
    if (!want) return 1;
    if (want == 'H' || want == 'R') return choice[0] == want && choice[1] == '\0';
    return choice[0] == want;
}

static int hall_from_hm(const char *hm_in)
{
    char hm[64];
    norm_hm(hm_in, hm, sizeof hm);
    char want = split_choice(hm);
    if (!hm[0]) return 0;
    int best = 0, best_score = -1;
    for (int h = 1; h <= N_HALL; h++) {
        const sg_entry *e = &sg_table[h];
        int level = 0;
        if (!strcmp(hm, e->full) || !strcmp(hm, e->setting))
            level = 3;
        else if (e->no_ones[0] && !strcmp(hm, e->no_ones))
            level = 2;
        else if (!strcmp(hm, e->short_))
            level = 1;
        if (!level || !choice_matches(e->choice, want)) continue;
        int score = level * 2 + (1 - choice_rank(e->choice));
        if (score > best_score) {
            best_score = score;
            best = h;
        }
    }
    return best;
}

static int hall_from_symbol(const char *hall_in)
{
    char hall[64];
    norm_hall(hall_in, hall, sizeof hall);
    if (!hall[0]) return 0;
    for (int h = 1; h <= N_HALL; h++)
        if (!strcmp(hall, sg_table[h].hall)) return h;
    return 0;
}

static int hall_from_number(int number)
{
    if (number < 1 || number > 230) return 0;
    int best = 0;
    for (int h = 1; h <= N_HALL; h++) {
        if (sg_table[h].number != number) continue;
        if (!best || choice_rank(sg_table[h].choice) < choice_rank(sg_table[best].choice)) best = h;
    }
    return best;
}

int pid_spacegroup_hall_number(const char *hall, const char *hm, int number)
{
    pthread_once(&sg_once, sg_table_init);
    int h = 0;
    if (hall && hall[0]) {
        h = hall_from_symbol(hall);
        if (h) return h;
        PID_LOGD("Hall symbol '%s' not in spglib's table; trying other symbols", hall);
    }
    if (hm && hm[0]) {
        h = hall_from_hm(hm);
        if (h) return h;
        PID_LOGD("H-M symbol '%s' not recognized; trying the number", hm);
    }
    return hall_from_number(number);
}

pid_status pid_spacegroup_ops(const char *hall, const char *hm, int number, int *n_ops,
                              int (**rot)[3][3], double (**trans)[3], pid_error *err)
{
    if (!n_ops || !rot || !trans)
        return pid_fail(err, PID_ERR_ARG, "pid_spacegroup_ops: NULL output");
    *n_ops = 0;
    *rot = NULL;
    *trans = NULL;
    int h = pid_spacegroup_hall_number(hall, hm, number);
    if (!h)
        return pid_fail(err, PID_ERR_FORMAT, "unknown space group (Hall '%s', H-M '%s', number %d)",
                        hall ? hall : "", hm ? hm : "", number);
    int r192[192][3][3];
    double t192[192][3];
    int n = spg_get_symmetry_from_database(r192, t192, h);
    if (n <= 0)
        return pid_fail(err, PID_ERR_INTERNAL, "spglib has no operations for Hall number %d", h);
    int(*r)[3][3] = malloc((size_t)n * sizeof *r);
    double(*t)[3] = malloc((size_t)n * sizeof *t);
    if (!r || !t) {
        free(r);
        free(t);
        return pid_fail(err, PID_ERR_NOMEM, "out of memory for %d symmetry operations", n);
    }
    memcpy(r, r192, (size_t)n * sizeof *r);
    memcpy(t, t192, (size_t)n * sizeof *t);
    *rot = r;
    *trans = t;
    *n_ops = n;
    return PID_OK;
}

const char *pid_spacegroup_symbol(int number)
{
    if (number < 1 || number > 230) return "";
    pthread_once(&sg_once, sg_table_init);
    return sg_symbols[number];
}

/* ------------------------------------------------------------------------ */
/* Symmetry expansion                                                       */

static double wrap01(double x)
{
    double w = x - floor(x);
    /* floor(-1e-17) = -1 gives w = 1.0 in floating point. */
    if (!(w < 1.0) || w < 0.0) w = 0.0;
    return w;
}

/* Distance in angstrom between fractional positions p and q, nearest
 * periodic image (exact for the short distances merging is about). */
static double frac_distance(const double g[3][3], const double p[3], const double q[3])
{
    double d[3];
    for (int k = 0; k < 3; k++) {
        d[k] = p[k] - q[k];
        d[k] -= round(d[k]);
    }
    double s = 0.0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            s += d[i] * g[i][j] * d[j];
    return sqrt(s > 0 ? s : 0);
}

/* Uniform grid over the cell in fractional coordinates, so that "is there
 * a matching atom within tol?" looks at 27 bins instead of every atom. A bin
 * along axis k is at least tol * |a*_k| wide in fractional units, which is
 * tol angstrom across lattice planes, so matches lie in neighbouring bins. */
typedef struct {
    int nb[3];
    int *head; /* first site of each bin, -1 = empty */
    int *next; /* next site in the same bin */
    size_t cap;
} site_grid;

static void grid_free(site_grid *gr)
{
    free(gr->head);
    free(gr->next);
    memset(gr, 0, sizeof *gr);
}

static int grid_init(site_grid *gr, const pid_structure *s, double tol)
{
    double gs[3][3];
    pid_structure_reciprocal_metric(s, gs);
    memset(gr, 0, sizeof *gr);
    size_t nbins = 1;
    for (int k = 0; k < 3; k++) {
        double w = (tol > 1e-3 ? tol : 1e-3) * sqrt(gs[k][k]);
        double nb = w > 0 ? floor(1.0 / w) : 1.0;
        gr->nb[k] = nb < 1 ? 1 : nb > 40 ? 40 : (int)nb;
        nbins *= (size_t)gr->nb[k];
    }
    gr->head = malloc(nbins * sizeof *gr->head);
    if (!gr->head) return 0;
    memset(gr->head, 0xff, nbins * sizeof *gr->head); /* all -1 */
    return 1;
}

static int grid_cell(const site_grid *gr, int i0, int i1, int i2)
{
    return (i0 * gr->nb[1] + i1) * gr->nb[2] + i2;
}

static void grid_index(const site_grid *gr, const double p[3], int idx[3])
{
    for (int k = 0; k < 3; k++) {
        idx[k] = (int)(p[k] * gr->nb[k]);
        if (idx[k] < 0) idx[k] = 0;
        if (idx[k] >= gr->nb[k]) idx[k] = gr->nb[k] - 1;
    }
}

/* Add site i (position p, in [0,1)). Returns 0 when out of memory. */
static int grid_add(site_grid *gr, int i, const double p[3])
{
    if ((size_t)i >= gr->cap) {
        size_t ncap = gr->cap ? gr->cap * 2 : 256;
        while (ncap <= (size_t)i)
            ncap *= 2;
        int *tmp = realloc(gr->next, ncap * sizeof *tmp);
        if (!tmp) return 0;
        gr->next = tmp;
        gr->cap = ncap;
    }
    int idx[3];
    grid_index(gr, p, idx);
    int c = grid_cell(gr, idx[0], idx[1], idx[2]);
    gr->next[i] = gr->head[c];
    gr->head[c] = i;
    return 1;
}

typedef enum {
    MATCH_SAME_SPECIES, /* same element, charge and occupancy: one atom */
    MATCH_PARTIAL       /* both partially occupied: one position of a mixed site */
} match_mode;

static int site_matches(const pid_site *a, const pid_site *b, match_mode mode)
{
    if (mode == MATCH_PARTIAL) return a->occupancy < 1.0 - 1e-6 && b->occupancy < 1.0 - 1e-6;
    return a->z == b->z && a->charge == b->charge &&
           fabs(a->occupancy - b->occupancy) < OCC_QUANTUM;
}

/* Index of a site in the grid within tol of p that matches `like`, or -1. */
static int grid_find(const site_grid *gr, const pid_site *sites, const double g[3][3],
                     const double p[3], const pid_site *like, match_mode mode, double tol)
{
    int idx[3];
    grid_index(gr, p, idx);
    int lo[3], hi[3];
    for (int k = 0; k < 3; k++) {
        /* Fewer than 3 bins: visit each bin once. */
        lo[k] = gr->nb[k] >= 3 ? -1 : 0;
        hi[k] = gr->nb[k] >= 3 ? 1 : gr->nb[k] - 1;
    }
    for (int d0 = lo[0]; d0 <= hi[0]; d0++)
        for (int d1 = lo[1]; d1 <= hi[1]; d1++)
            for (int d2 = lo[2]; d2 <= hi[2]; d2++) {
                int i0 = (idx[0] + d0 + gr->nb[0]) % gr->nb[0];
                int i1 = (idx[1] + d1 + gr->nb[1]) % gr->nb[1];
                int i2 = (idx[2] + d2 + gr->nb[2]) % gr->nb[2];
                for (int j = gr->head[grid_cell(gr, i0, i1, i2)]; j >= 0; j = gr->next[j])
                    if (site_matches(&sites[j], like, mode) &&
                        frac_distance(g, p, sites[j].frac) <= tol)
                        return j;
            }
    return -1;
}

/* A species at one position: what spglib must tell apart. */
typedef struct {
    int z, charge;
    long occ_q; /* occupancy in units of OCC_QUANTUM */
} species_key;

static int cmp_species(const void *pa, const void *pb)
{
    const species_key *a = pa, *b = pb;
    if (a->z != b->z) return a->z < b->z ? -1 : 1;
    if (a->charge != b->charge) return a->charge < b->charge ? -1 : 1;
    if (a->occ_q != b->occ_q) return a->occ_q < b->occ_q ? -1 : 1;
    return 0;
}

/* spglib input built from the expanded sites: one point per distinct
 * position, typed by the sorted list of species there (so a mixed Fe/Mn
 * site is one atom of its own type, not two atoms "too close"). */
typedef struct {
    int n;
    double (*pos)[3];
    int *types;
} spg_cell;

static void spg_cell_free(spg_cell *c)
{
    free(c->pos);
    free(c->types);
}

static pid_status build_spg_cell(const pid_structure *s, const double g[3][3], double tol,
                                 spg_cell *out, pid_error *err)
{
    int n = s->n_sites;
    pid_status st = PID_OK;
    site_grid grid = {0};
    int *group = malloc((size_t)n * sizeof *group);         /* position group of each site */
    int *first = malloc((size_t)n * sizeof *first);         /* first site of each group */
    species_key *keys = malloc((size_t)n * sizeof *keys);   /* species of all groups, by group */
    int *kstart = malloc(((size_t)n + 1) * sizeof *kstart); /* group's keys in keys[] */
    int *gcount = calloc((size_t)n, sizeof *gcount);
    int *ktype = malloc((size_t)n * sizeof *ktype);
    out->pos = malloc((size_t)n * sizeof *out->pos);
    out->types = malloc((size_t)n * sizeof *out->types);
    out->n = 0;
    if (!group || !first || !keys || !kstart || !gcount || !ktype || !out->pos || !out->types) {
        st = pid_fail(err, PID_ERR_NOMEM, "out of memory for %d atoms", n);
        goto done;
    }
    /* Only partially occupied sites can legitimately share a position, so
     * only those are grouped with each other. */
    if (!grid_init(&grid, s, tol)) {
        st = pid_fail(err, PID_ERR_NOMEM, "out of memory for %d atoms", n);
        goto done;
    }
    int ng = 0;
    for (int i = 0; i < n; i++) {
        group[i] = -1;
        if (s->sites[i].occupancy < 1.0 - 1e-6) {
            int j =
                grid_find(&grid, s->sites, g, s->sites[i].frac, &s->sites[i], MATCH_PARTIAL, tol);
            if (j >= 0) group[i] = group[j];
            if (!grid_add(&grid, i, s->sites[i].frac)) {
                st = pid_fail(err, PID_ERR_NOMEM, "out of memory for %d atoms", n);
                goto done;
            }
        }
        if (group[i] < 0) {
            first[ng] = i;
            group[i] = ng++;
        }
        gcount[group[i]]++;
    }
    kstart[0] = 0;
    for (int k = 0; k < ng; k++)
        kstart[k + 1] = kstart[k] + gcount[k];
    memset(gcount, 0, (size_t)ng * sizeof *gcount);
    for (int i = 0; i < n; i++) {
        int k = group[i];
        species_key *key = &keys[kstart[k] + gcount[k]++];
        key->z = s->sites[i].z;
        key->charge = s->sites[i].charge;
        key->occ_q = lround(s->sites[i].occupancy / OCC_QUANTUM);
    }
    /* Type = index of the first group with an identical species list. */
    int ntypes = 0;
    for (int k = 0; k < ng; k++) {
        species_key *kk = &keys[kstart[k]];
        int cnt = kstart[k + 1] - kstart[k];
        qsort(kk, (size_t)cnt, sizeof *kk, cmp_species);
        ktype[k] = -1;
        for (int m = 0; m < k && ktype[k] < 0; m++) {
            if (kstart[m + 1] - kstart[m] != cnt) continue;
            if (!memcmp(&keys[kstart[m]], kk, (size_t)cnt * sizeof *kk)) ktype[k] = ktype[m];
        }
        if (ktype[k] < 0) ktype[k] = ++ntypes;
        memcpy(out->pos[k], s->sites[first[k]].frac, sizeof out->pos[k]);
        out->types[k] = ktype[k];
    }
    out->n = ng;
done:
    grid_free(&grid);
    free(group);
    free(first);
    free(keys);
    free(kstart);
    free(gcount);
    free(ktype);
    if (st) spg_cell_free(out);
    return st;
}

/* Run spglib; on success replace s's operations by the dataset's (which
 * are in the input cell's basis, centring and supercell translations
 * included) and fill the space-group fields. Returns 1 if spglib found a
 * space group. */
static int find_symmetry(pid_structure *s, const spg_cell *cell, double tol, int n_gen_ops,
                         pid_error *err, pid_status *st)
{
    double lat[3][3];
    cell_lattice(s, lat);
    if (cell->n > SPGLIB_MAX_ATOMS) {
        PID_LOGW("%s: %d atoms, more than the %d spglib is asked about; keeping the file's %d "
                 "operations",
                 s->name, cell->n, SPGLIB_MAX_ATOMS, s->n_ops);
        return 0;
    }
    double precs[2] = {SYMPREC_A, tol};
    int nprec = tol > SYMPREC_A ? 2 : 1;
    SpglibDataset *ds = NULL;
    for (int i = 0; i < nprec; i++) {
        if (ds) spg_free_dataset(ds);
        ds = spg_get_dataset(lat, cell->pos, cell->types, cell->n, precs[i]);
        /* A tighter tolerance that misses operations the file's own symmetry
         * guarantees means the coordinates are rounded ("0.333"): retry
         * with the merging tolerance. */
        if (ds && ds->n_operations >= n_gen_ops) break;
    }
    if (!ds) {
        SpglibError e = spg_get_error_code();
        PID_LOGW("%s: spglib found no space group (%s); keeping the file's %d operations", s->name,
                 spg_get_error_message(e), s->n_ops);
        return 0;
    }
    int n = ds->n_operations;
    int(*r)[3][3] = malloc((size_t)n * sizeof *r);
    double(*t)[3] = malloc((size_t)n * sizeof *t);
    if (!r || !t) {
        free(r);
        free(t);
        spg_free_dataset(ds);
        *st = pid_fail(err, PID_ERR_NOMEM, "out of memory for %d symmetry operations", n);
        return 0;
    }
    memcpy(r, ds->rotations, (size_t)n * sizeof *r);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++)
            t[i][k] = wrap01(ds->translations[i][k]);
    free(s->rot);
    free(s->trans);
    s->rot = r;
    s->trans = t;
    s->n_ops = n;
    s->spacegroup_number = ds->spacegroup_number;
    snprintf(s->spacegroup_hm, sizeof s->spacegroup_hm, "%s", ds->international_symbol);
    spg_free_dataset(ds);
    return 1;
}

pid_status pid_structure_expand(pid_structure *s, double tol_angstrom, pid_error *err)
{
    if (!s) return pid_fail(err, PID_ERR_ARG, "pid_structure_expand: NULL structure");
    if (!(tol_angstrom >= 0) || !isfinite(tol_angstrom))
        return pid_fail(err, PID_ERR_ARG, "%s: merge tolerance %g angstrom is not valid", s->name,
                        tol_angstrom);
    if (s->n_asym <= 0 || s->n_asym > s->n_sites || !s->sites)
        return pid_fail(err, PID_ERR_FORMAT, "%s: no atom sites to expand", s->name);
    if (s->n_ops < 0 || (s->n_ops > 0 && (!s->rot || !s->trans)))
        return pid_fail(err, PID_ERR_ARG, "%s: symmetry operations missing", s->name);
    if (!(pid_structure_volume(s) > 0))
        return pid_fail(err, PID_ERR_FORMAT,
                        "%s: cell a=%g b=%g c=%g alpha=%g beta=%g gamma=%g has no volume", s->name,
                        s->a, s->b, s->c, s->alpha, s->beta, s->gamma);

    static const int identity[1][3][3] = {{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}};
    static const double zero[1][3] = {{0, 0, 0}};
    int n_ops = s->n_ops > 0 ? s->n_ops : 1;
    const int(*rot)[3][3] = s->n_ops > 0 ? (const int(*)[3][3])s->rot : identity;
    const double(*trans)[3] = s->n_ops > 0 ? (const double(*)[3])s->trans : zero;

    double g[3][3];
    pid_structure_metric(s, g);
    pid_status st = PID_OK;
    int n_asym = s->n_asym;
    size_t cap = (size_t)n_asym * 4 + 16, n = 0;
    pid_site *out = malloc(cap * sizeof *out);
    site_grid grid = {0};
    spg_cell cell = {0};
    if (!out || !grid_init(&grid, s, tol_angstrom)) {
        st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory expanding %d sites", s->name, n_asym);
        goto fail;
    }
    /* The file's sites come first, in file order, so callers can show the
     * asymmetric unit as s->sites[0 .. n_asym-1]. */
    for (int i = 0; i < n_asym; i++) {
        out[n] = s->sites[i];
        for (int k = 0; k < 3; k++) {
            if (!isfinite(out[n].frac[k])) {
                st = pid_fail(err, PID_ERR_FORMAT, "%s: site %s has a non-finite coordinate",
                              s->name, out[n].label);
                goto fail;
            }
            out[n].frac[k] = wrap01(out[n].frac[k]);
        }
        if (!grid_add(&grid, (int)n, out[n].frac)) goto nomem;
        n++;
    }
    /* An image is a new atom unless an atom of the same species (element,
     * charge, occupancy) is already within tol: that covers special
     * positions and files listing symmetry-equivalent atoms, while species
     * sharing a mixed site stay separate. */
    for (int i = 0; i < n_asym; i++) {
        for (int o = 0; o < n_ops; o++) {
            double p[3];
            for (int r = 0; r < 3; r++) {
                p[r] = trans[o][r];
                for (int c = 0; c < 3; c++)
                    p[r] += rot[o][r][c] * out[i].frac[c];
                p[r] = wrap01(p[r]);
            }
            if (grid_find(&grid, out, g, p, &out[i], MATCH_SAME_SPECIES, tol_angstrom) >= 0)
                continue;
            if (n >= (size_t)PID_STRUCTURE_MAX_SITES) {
                st = pid_fail(err, PID_ERR_FORMAT,
                              "%s: more than %d atoms in the cell after symmetry expansion",
                              s->name, PID_STRUCTURE_MAX_SITES);
                goto fail;
            }
            if (n == cap) {
                size_t ncap = cap * 2;
                pid_site *tmp = realloc(out, ncap * sizeof *out);
                if (!tmp) goto nomem;
                out = tmp;
                cap = ncap;
            }
            out[n] = out[i];
            memcpy(out[n].frac, p, sizeof p);
            if (!grid_add(&grid, (int)n, p)) goto nomem;
            n++;
        }
    }
    grid_free(&grid);
    free(s->sites);
    s->sites = out;
    s->n_sites = (int)n;
    out = NULL;

    int n_gen_ops = s->n_ops;
    st = build_spg_cell(s, g, tol_angstrom > 1e-3 ? tol_angstrom : 1e-3, &cell, err);
    if (st) goto fail;
    if (!find_symmetry(s, &cell, tol_angstrom, n_gen_ops, err, &st)) {
        if (st) goto fail;
        /* Keep the file's operations; the group type follows from them
         * alone (cheap: no atoms involved), else from the file's number. */
        if (s->n_ops > 0) {
            double lat[3][3];
            cell_lattice(s, lat);
            SpglibSpacegroupType t =
                spg_get_spacegroup_type_from_symmetry(s->rot, s->trans, s->n_ops, lat, SYMPREC_A);
            if (t.number >= 1 && t.number <= 230) {
                s->spacegroup_number = t.number;
                snprintf(s->spacegroup_hm, sizeof s->spacegroup_hm, "%s", t.international_short);
            }
        }
        if (s->spacegroup_number >= 1 && s->spacegroup_number <= 230 && !s->spacegroup_hm[0])
            snprintf(s->spacegroup_hm, sizeof s->spacegroup_hm, "%s",
                     pid_spacegroup_symbol(s->spacegroup_number));
        if (s->n_ops == 0) {
            /* Users of rot/trans can rely on at least the identity. */
            s->rot = malloc(sizeof *s->rot);
            s->trans = calloc(1, sizeof *s->trans);
            if (!s->rot || !s->trans) {
                st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", s->name);
                goto fail;
            }
            memcpy(s->rot, identity, sizeof *s->rot);
            s->n_ops = 1;
        }
    }
    spg_cell_free(&cell);
    pid_structure_update_formula(s);
    return PID_OK;
nomem:
    st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory expanding sites", s->name);
fail:
    free(out);
    grid_free(&grid);
    spg_cell_free(&cell);
    return st;
}
