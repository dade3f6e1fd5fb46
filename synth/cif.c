/* CIF reading through the COMCIFS CIF API (libcif): every data block with
 * atom sites becomes a pid_structure (cell, symmetry from listed operators or
 * a Hall / H-M symbol / number, sites, reference), expanded by
 * pid_structure_expand. Input is size- and text-checked before parsing. */
#include "synth/cif.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cif.h>
#include <unicode/ustring.h>

#include "core/log.h"

/* Images of one site closer than this (angstrom) are one atom. Generous
 * enough for coordinates rounded to three decimals ("0.333" for 1/3 in a
 * 10 A cell is 0.003 A off); real distinct atoms are never this close. */
#define MERGE_TOL_A 0.05
/* More listed operators than this is not a space group in any sane cell. */
#define MAX_SYMOPS 1536
/* Parse errors about characters or encoding (accents in author names in a
 * Latin-1 file, over-long lines) do not touch the structure; tolerate this
 * many before giving up, so binary junk still fails fast. */
#define MAX_TOLERATED_ERRORS 100
/* Deepest bracket nesting accepted (see too_deeply_nested). */
#define MAX_NESTING 32

/* ------------------------------------------------------------------------ */
/* Strings                                                                  */

/* ASCII item name -> UTF-16 for the API (names are ASCII; no allocation). */
static void u_ascii(const char *s, UChar *u, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        u[i] = (UChar)(unsigned char)s[i];
    u[i] = 0;
}

/* UTF-16 -> UTF-8 into out (always terminated, cut at a character
 * boundary when too long). NULL or unconvertible input gives "". */
static void u_to_utf8(const UChar *u, int32_t ulen, char *out, size_t cap)
{
    out[0] = '\0';
    if (!u || cap == 0) return;
    UErrorCode ec = U_ZERO_ERROR;
    int32_t need = 0;
    u_strToUTF8WithSub(NULL, 0, &need, u, ulen, 0xFFFD, NULL, &ec);
    if (ec != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(ec)) return;
    char *tmp = malloc((size_t)need + 1);
    if (!tmp) return;
    ec = U_ZERO_ERROR;
    u_strToUTF8WithSub(tmp, need + 1, NULL, u, ulen, 0xFFFD, NULL, &ec);
    if (U_FAILURE(ec)) {
        free(tmp);
        return;
    }
    size_t n = strlen(tmp);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)tmp[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(out, tmp, n);
    out[n] = '\0';
    free(tmp);
}

/* Collapse runs of white space (newlines in text fields) to one blank and trim. */
static void squeeze_ws(char *s)
{
    size_t j = 0;
    int space = 0;
    for (size_t i = 0; s[i]; i++) {
        if (isspace((unsigned char)s[i])) {
            space = j > 0;
            continue;
        }
        if (space) s[j++] = ' ';
        space = 0;
        s[j++] = s[i];
    }
    s[j] = '\0';
}

/* Printable ASCII excerpt of parser text for messages. */
static void excerpt(const UChar *text, size_t len, char *out, size_t cap)
{
    size_t j = 0;
    if (!text) len = 0;
    for (size_t i = 0; i < len && j + 4 < cap && i < 24; i++) {
        UChar c = text[i];
        out[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[j] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Parsing                                                                  */

typedef struct {
    int code; /* first fatal error, 0 if none */
    size_t line, column;
    char near[32];
    int tol_code; /* first tolerated error */
    size_t tol_line, tol_column;
    int n_tolerated;
    int keep_going; /* 1: record errors but let libcif recover (see read_cif) */
    int n_errors;
} parse_state;

static const char *parse_error_str(int code)
{
    switch (code) {
    case CIF_INVALID_CHAR:
        return "invalid character or encoding";
    case CIF_UNMAPPED_CHAR:
        return "character not representable in Unicode";
    case CIF_DISALLOWED_CHAR:
        return "disallowed character";
    case CIF_MISSING_SPACE:
        return "missing white space between values";
    case CIF_MISSING_ENDQUOTE:
        return "unterminated quoted string";
    case CIF_UNCLOSED_TEXT:
        return "unterminated text field (';')";
    case CIF_OVERLENGTH_LINE:
        return "line longer than 2048 characters";
    case CIF_DISALLOWED_INITIAL_CHAR:
        return "value starts with a reserved character";
    case CIF_WRONG_ENCODING:
        return "wrong text encoding";
    case CIF_NO_BLOCK_HEADER:
        return "content before the first data_ block header";
    case CIF_FRAME_NOT_ALLOWED:
        return "save frame not allowed here";
    case CIF_NO_FRAME_TERM:
        return "save frame not terminated";
    case CIF_UNEXPECTED_TERM:
        return "unexpected save_ terminator";
    case CIF_EOF_IN_FRAME:
        return "end of file inside a save frame";
    case CIF_RESERVED_WORD:
        return "reserved word used as a value";
    case CIF_MISSING_VALUE:
        return "data name without a value";
    case CIF_UNEXPECTED_VALUE:
        return "value without a data name";
    case CIF_UNEXPECTED_DELIM:
        return "unexpected delimiter";
    case CIF_MISSING_DELIM:
        return "missing delimiter";
    case CIF_MISSING_KEY:
        return "missing table key";
    case CIF_UNQUOTED_KEY:
        return "unquoted table key";
    case CIF_MISQUOTED_KEY:
        return "misquoted table key";
    case CIF_NULL_KEY:
        return "null table key";
    case CIF_DUP_BLOCKCODE:
        return "duplicate data block name";
    case CIF_INVALID_BLOCKCODE:
        return "invalid data block name";
    case CIF_DUP_FRAMECODE:
        return "duplicate save frame name";
    case CIF_INVALID_FRAMECODE:
        return "invalid save frame name";
    case CIF_DUP_ITEMNAME:
        return "duplicate data name";
    case CIF_INVALID_ITEMNAME:
        return "invalid data name";
    case CIF_EMPTY_LOOP:
        return "loop without values";
    case CIF_NULL_LOOP:
        return "loop without data names";
    case CIF_PARTIAL_PACKET:
        return "loop values do not fill the last row";
    case CIF_WRONG_LOOP:
        return "data name in the wrong loop";
    case CIF_MEMORY_ERROR:
        return "out of memory";
    default:
        return "malformed CIF";
    }
}

static int tolerable(int code)
{
    return code == CIF_INVALID_CHAR || code == CIF_UNMAPPED_CHAR || code == CIF_DISALLOWED_CHAR ||
           code == CIF_WRONG_ENCODING || code == CIF_OVERLENGTH_LINE;
}

/* Record the first error; abort the parse on the first real syntax error
 * (a nonzero return stops libcif at once). */
static int on_parse_error(int code, size_t line, size_t column, const UChar *text, size_t length,
                          void *data)
{
    parse_state *ps = data;
    if (ps->keep_going && !tolerable(code)) {
        if (!ps->code) {
            ps->code = code ? code : CIF_ERROR;
            ps->line = line;
            ps->column = column ? column : 1;
            excerpt(text, length, ps->near, sizeof ps->near);
        }
        /* Bounded, should the syntax pass have missed something. */
        return ++ps->n_errors > MAX_TOLERATED_ERRORS ? ps->code : 0;
    }
    if (tolerable(code) && ps->n_tolerated < MAX_TOLERATED_ERRORS) {
        if (ps->n_tolerated++ == 0) {
            ps->tol_code = code;
            ps->tol_line = line;
            ps->tol_column = column ? column : 1;
        }
        return 0;
    }
    if (!ps->code && tolerable(code)) {
        /* Too many: report where the trouble started. */
        ps->code = ps->tol_code;
        ps->line = ps->tol_line;
        ps->column = ps->tol_column;
    } else if (!ps->code) {
        ps->code = code ? code : CIF_ERROR;
        ps->line = line;
        ps->column = column ? column : 1; /* libcif says 0 for "before the first character" */
        excerpt(text, length, ps->near, sizeof ps->near);
    }
    return code ? code : CIF_ERROR;
}

/* ------------------------------------------------------------------------ */
/* Values                                                                   */

typedef enum { VAL_ABSENT = 0, VAL_OK, VAL_BAD } val_state;

/* Number of a value ("5.4307(2)" -> 5.4307). '?' and '.' are absent. */
static val_state value_number(cif_value_tp *v, double *out)
{
    if (!v) return VAL_ABSENT;
    cif_kind_tp k = cif_value_kind(v);
    if (k == CIF_NA_KIND || k == CIF_UNK_KIND) return VAL_ABSENT;
    if (k != CIF_NUMB_KIND && k != CIF_CHAR_KIND) return VAL_BAD;
    double d;
    if (cif_value_get_number(v, &d) != CIF_OK || !isfinite(d)) return VAL_BAD;
    *out = d;
    return VAL_OK;
}

/* Text of a value; "" for '?', '.', lists and tables. */
static void value_text(cif_value_tp *v, char *out, size_t cap)
{
    out[0] = '\0';
    if (!v) return;
    cif_kind_tp k = cif_value_kind(v);
    if (k != CIF_NUMB_KIND && k != CIF_CHAR_KIND) return;
    UChar *t = NULL;
    if (cif_value_get_text(v, &t) != CIF_OK || !t) return;
    u_to_utf8(t, -1, out, cap);
    free(t);
}

/* Look up the first of several alias names in a block. *v (owned by the
 * caller, free with cif_value_free) is NULL when none is present. Sets
 * *several when the item has more than one value (a loop). */
static const char *block_value(cif_container_tp *b, const char *const *names, cif_value_tp **v,
                               int *several)
{
    *v = NULL;
    if (several) *several = 0;
    for (size_t i = 0; names[i]; i++) {
        UChar uname[80];
        u_ascii(names[i], uname, sizeof uname / sizeof uname[0]);
        cif_value_tp *val = NULL;
        int rc = cif_container_get_value(b, uname, &val);
        if ((rc == CIF_OK || rc == CIF_AMBIGUOUS_ITEM) && val) {
            *v = val;
            if (several) *several = rc == CIF_AMBIGUOUS_ITEM;
            return names[i];
        }
        cif_value_free(val);
    }
    return NULL;
}

static void block_text(cif_container_tp *b, const char *const *names, char *out, size_t cap,
                       int *several)
{
    cif_value_tp *v = NULL;
    block_value(b, names, &v, several);
    value_text(v, out, cap);
    squeeze_ws(out);
    cif_value_free(v);
}

/* Item of a loop packet (owned by the packet) under the first alias present. */
static cif_value_tp *packet_value(cif_packet_tp *p, const char *const *names)
{
    for (size_t i = 0; names[i]; i++) {
        UChar uname[80];
        u_ascii(names[i], uname, sizeof uname / sizeof uname[0]);
        cif_value_tp *v = NULL;
        if (cif_packet_get_item(p, uname, &v) == CIF_OK && v) return v;
    }
    return NULL;
}

/* Iterate the packets of the loop holding names[0] (or an alias). */
typedef struct {
    cif_loop_tp *loop;
    cif_pktitr_tp *it;
    cif_packet_tp *pkt;
} loop_iter;

static int loop_open(cif_container_tp *b, const char *const *names, loop_iter *li)
{
    memset(li, 0, sizeof *li);
    for (size_t i = 0; names[i]; i++) {
        UChar uname[80];
        u_ascii(names[i], uname, sizeof uname / sizeof uname[0]);
        cif_loop_tp *loop = NULL;
        if (cif_container_get_item_loop(b, uname, &loop) != CIF_OK || !loop) continue;
        if (cif_loop_get_packets(loop, &li->it) != CIF_OK) {
            li->it = NULL;
            cif_loop_free(loop);
            continue;
        }
        li->loop = loop;
        return 1;
    }
    return 0;
}

/* 1 with li->pkt filled, 0 at the end, -1 on an API error. */
static int loop_next(loop_iter *li)
{
    int rc = cif_pktitr_next_packet(li->it, &li->pkt);
    if (rc == CIF_OK) return 1;
    return rc == CIF_FINISHED ? 0 : -1;
}

static void loop_close(loop_iter *li)
{
    cif_packet_free(li->pkt);
    if (li->it && cif_pktitr_close(li->it) != CIF_OK) PID_LOGD("cif_pktitr_close failed");
    if (li->loop) cif_loop_free(li->loop);
    memset(li, 0, sizeof *li);
}

/* ------------------------------------------------------------------------ */
/* Symmetry operators "x,y,z", "-x+1/2,y,-z+0.5", "x-y,x,z+1/6"            */

static void skip_ws(const char **p)
{
    while (**p == ' ' || **p == '\t')
        (*p)++;
}

/* Unsigned decimal number "2", "0.5", ".25". Returns 0 if none. */
static int read_number(const char **p, double *v)
{
    const char *s = *p;
    double x = 0.0;
    int digits = 0;
    while (isdigit((unsigned char)*s)) {
        x = x * 10 + (*s++ - '0');
        digits++;
        if (digits > 12) return 0;
    }
    if (*s == '.') {
        s++;
        double scale = 0.1;
        while (isdigit((unsigned char)*s)) {
            x += (*s++ - '0') * scale;
            scale *= 0.1;
            digits++;
            if (digits > 24) return 0;
        }
    }
    if (!digits) return 0;
    *v = x;
    *p = s;
    return 1;
}

static int axis_index(char c)
{
    switch (c) {
    case 'x':
    case 'X':
        return 0;
    case 'y':
    case 'Y':
        return 1;
    case 'z':
    case 'Z':
        return 2;
    default:
        return -1;
    }
}

/* One row of an operator: signed terms, each a number ("1/2", "0.5"), an
 * axis ("x"), or a coefficient times an axis ("2x", "2*x"). Stops at ',' or
 * the end. Returns 0 on anything else. */
static int parse_symop_row(const char **pp, double row[3], double *t)
{
    const char *p = *pp;
    row[0] = row[1] = row[2] = 0.0;
    *t = 0.0;
    int terms = 0;
    for (;;) {
        skip_ws(&p);
        if (*p == ',' || *p == '\0') break;
        double sign = 1.0;
        if (*p == '+' || *p == '-') {
            sign = *p == '-' ? -1.0 : 1.0;
            p++;
            skip_ws(&p);
        } else if (terms > 0) {
            return 0; /* two terms without an operator between them */
        }
        double coef = 1.0;
        int have_num = read_number(&p, &coef);
        skip_ws(&p);
        if (have_num && *p == '/') {
            p++;
            skip_ws(&p);
            double den;
            if (!read_number(&p, &den) || !(den > 0)) return 0;
            coef /= den;
            skip_ws(&p);
        }
        if (have_num && *p == '*') {
            p++;
            skip_ws(&p);
            if (axis_index(*p) < 0) return 0;
        }
        int ax = axis_index(*p);
        if (ax >= 0) {
            p++;
            row[ax] += sign * coef;
        } else if (have_num) {
            *t += sign * coef;
        } else {
            return 0;
        }
        terms++;
    }
    if (!terms) return 0;
    *pp = p;
    return 1;
}

static int parse_symop(const char *s, int rot[3][3], double trans[3])
{
    const char *p = s;
    for (int r = 0; r < 3; r++) {
        double row[3];
        if (!parse_symop_row(&p, row, &trans[r])) return 0;
        for (int c = 0; c < 3; c++) {
            double q = round(row[c]);
            if (fabs(row[c] - q) > 1e-6 || fabs(q) > 3) return 0;
            rot[r][c] = (int)q;
        }
        skip_ws(&p);
        if (r < 2) {
            if (*p != ',') return 0;
            p++;
        }
    }
    skip_ws(&p);
    if (*p != '\0') return 0;
    /* A symmetry operation maps the lattice onto itself: det = +-1. */
    long det = (long)rot[0][0] * (rot[1][1] * rot[2][2] - rot[1][2] * rot[2][1]) -
               (long)rot[0][1] * (rot[1][0] * rot[2][2] - rot[1][2] * rot[2][0]) +
               (long)rot[0][2] * (rot[1][0] * rot[2][1] - rot[1][1] * rot[2][0]);
    return det == 1 || det == -1;
}

static const char *const names_symop[] = {
    "_space_group_symop_operation_xyz", "_symmetry_equiv_pos_as_xyz",
    "_space_group_symop.operation_xyz", "_symmetry_equiv.pos_as_xyz", NULL};

/* Listed operators, if any (*n = 0 when the block lists none). */
static pid_status read_symops(cif_container_tp *b, const char *where, int *n, int (**rot)[3][3],
                              double (**trans)[3], pid_error *err)
{
    *n = 0;
    *rot = NULL;
    *trans = NULL;
    loop_iter li;
    if (!loop_open(b, names_symop, &li)) return PID_OK;
    pid_status st = PID_OK;
    int cap = 0, k;
    while ((k = loop_next(&li)) == 1) {
        cif_value_tp *v = packet_value(li.pkt, names_symop);
        char txt[256];
        value_text(v, txt, sizeof txt);
        squeeze_ws(txt);
        if (!txt[0]) continue;
        if (*n >= MAX_SYMOPS) {
            st = pid_fail(err, PID_ERR_FORMAT, "%s: more than %d symmetry operators", where,
                          MAX_SYMOPS);
            goto done;
        }
        if (*n == cap) {
            int ncap = cap ? cap * 2 : 48;
            int(*r)[3][3] = realloc(*rot, (size_t)ncap * sizeof *r);
            if (r) *rot = r;
            double(*t)[3] = realloc(*trans, (size_t)ncap * sizeof *t);
            if (t) *trans = t;
            if (!r || !t) {
                st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory reading operators", where);
                goto done;
            }
            cap = ncap;
        }
        if (!parse_symop(txt, (*rot)[*n], (*trans)[*n])) {
            st =
                pid_fail(err, PID_ERR_FORMAT, "%s: cannot read symmetry operator '%s'", where, txt);
            goto done;
        }
        (*n)++;
    }
    if (k < 0)
        st = pid_fail(err, PID_ERR_PARSE, "%s: cannot read the symmetry operator loop", where);
done:
    loop_close(&li);
    if (st) {
        free(*rot);
        free(*trans);
        *rot = NULL;
        *trans = NULL;
        *n = 0;
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* Blocks                                                                   */

static const char *const names_fract_x[] = {"_atom_site_fract_x", "_atom_site.fract_x", NULL};
static const char *const names_fract_y[] = {"_atom_site_fract_y", "_atom_site.fract_y", NULL};
static const char *const names_fract_z[] = {"_atom_site_fract_z", "_atom_site.fract_z", NULL};
static const char *const names_label[] = {"_atom_site_label", "_atom_site.label", NULL};
static const char *const names_type[] = {"_atom_site_type_symbol", "_atom_site.type_symbol", NULL};
static const char *const names_occ[] = {"_atom_site_occupancy", "_atom_site.occupancy", NULL};
static const char *const names_b[] = {"_atom_site_B_iso_or_equiv", "_atom_site.B_iso_or_equiv",
                                      NULL};
static const char *const names_u[] = {"_atom_site_U_iso_or_equiv", "_atom_site.U_iso_or_equiv",
                                      NULL};
static const char *const names_calc_flag[] = {"_atom_site_calc_flag", "_atom_site.calc_flag", NULL};

/* One atom site row -> site. Messages name the site. */
static pid_status read_site(cif_packet_tp *pkt, int index, const char *where, pid_site *site,
                            int *skip, pid_error *err)
{
    memset(site, 0, sizeof *site);
    *skip = 0;
    char label[64], type[64], flag[16];
    value_text(packet_value(pkt, names_label), label, sizeof label);
    value_text(packet_value(pkt, names_type), type, sizeof type);
    value_text(packet_value(pkt, names_calc_flag), flag, sizeof flag);
    squeeze_ws(label);
    squeeze_ws(type);
    if (!strcmp(flag, "dum")) { /* dummy atoms mark positions, they do not scatter */
        *skip = 1;
        return PID_OK;
    }
    if (!label[0]) snprintf(label, sizeof label, "%s", type[0] ? type : "?");
    snprintf(site->label, sizeof site->label, "%.*s", (int)sizeof site->label - 1, label);
    char site_name[96];
    snprintf(site_name, sizeof site_name, "site %d '%.60s'", index + 1, label);

    const char *elem_src = type[0] ? type : label;
    site->z = pid_element_z(elem_src, &site->charge);
    if (!site->z)
        return pid_fail(err, PID_ERR_FORMAT, "%s: %s: unknown element '%s'", where, site_name,
                        elem_src);
    snprintf(site->element, sizeof site->element, "%s", pid_element_symbol(site->z));

    const char *const *coord_names[3] = {names_fract_x, names_fract_y, names_fract_z};
    for (int k = 0; k < 3; k++) {
        cif_value_tp *v = packet_value(pkt, coord_names[k]);
        val_state vs = value_number(v, &site->frac[k]);
        if (vs != VAL_OK) {
            char txt[40];
            value_text(v, txt, sizeof txt);
            return pid_fail(err, PID_ERR_FORMAT, "%s: %s: %s is %s%s%s%s", where, site_name,
                            coord_names[k][0], vs == VAL_ABSENT ? "missing" : "not a number",
                            txt[0] ? " ('" : "", txt, txt[0] ? "')" : "");
        }
    }

    site->occupancy = 1.0;
    cif_value_tp *v = packet_value(pkt, names_occ);
    double occ = 1.0;
    val_state vs = value_number(v, &occ);
    if (vs == VAL_BAD || (vs == VAL_OK && !(occ > 0 && occ <= 1.0001))) {
        char txt[40];
        value_text(v, txt, sizeof txt);
        return pid_fail(err, PID_ERR_FORMAT, "%s: %s: occupancy '%s' is not a number in (0, 1]",
                        where, site_name, txt);
    }
    if (vs == VAL_OK) site->occupancy = occ > 1.0 ? 1.0 : occ;

    double b = 0.0, u = 0.0;
    v = packet_value(pkt, names_b);
    vs = value_number(v, &b);
    if (vs == VAL_ABSENT) {
        v = packet_value(pkt, names_u);
        vs = value_number(v, &u);
        b = 8.0 * M_PI * M_PI * u; /* B = 8 pi^2 U */
    }
    if (vs == VAL_BAD)
        return pid_fail(err, PID_ERR_FORMAT, "%s: %s: isotropic displacement is not a number",
                        where, site_name);
    if (vs == VAL_OK) {
        if (b < 0) {
            /* Slightly negative refined values happen; a negative B would
             * amplify high-angle intensities, so use none. */
            PID_LOGW("%s: %s: negative B_iso %g set to 0", where, site_name, b);
            b = 0.0;
        }
        site->b_iso = b;
    }
    return PID_OK;
}

static pid_status read_sites(cif_container_tp *b, const char *where, pid_structure *s,
                             pid_error *err)
{
    loop_iter li;
    if (!loop_open(b, names_fract_x, &li))
        return pid_fail(err, PID_ERR_FORMAT, "%s: no atom sites (_atom_site_fract_x)", where);
    pid_status st = PID_OK;
    int cap = 0, k, row = 0;
    while ((k = loop_next(&li)) == 1) {
        if (s->n_asym >= PID_STRUCTURE_MAX_SITES) {
            st = pid_fail(err, PID_ERR_FORMAT, "%s: more than %d atom sites", where,
                          PID_STRUCTURE_MAX_SITES);
            goto done;
        }
        if (s->n_asym == cap) {
            int ncap = cap ? cap * 2 : 16;
            pid_site *tmp = realloc(s->sites, (size_t)ncap * sizeof *tmp);
            if (!tmp) {
                st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory reading sites", where);
                goto done;
            }
            s->sites = tmp;
            cap = ncap;
        }
        int skip;
        st = read_site(li.pkt, row++, where, &s->sites[s->n_asym], &skip, err);
        if (st) goto done;
        if (!skip) s->n_sites = ++s->n_asym;
    }
    if (k < 0) {
        st = pid_fail(err, PID_ERR_PARSE, "%s: cannot read the atom site loop", where);
        goto done;
    }
    if (s->n_asym == 0)
        st = pid_fail(err, PID_ERR_FORMAT, "%s: the atom site loop is empty", where);
done:
    loop_close(&li);
    return st;
}

static const char *const names_cell[6][3] = {
    {"_cell_length_a", "_cell.length_a", NULL},
    {"_cell_length_b", "_cell.length_b", NULL},
    {"_cell_length_c", "_cell.length_c", NULL},
    {"_cell_angle_alpha", "_cell.angle_alpha", NULL},
    {"_cell_angle_beta", "_cell.angle_beta", NULL},
    {"_cell_angle_gamma", "_cell.angle_gamma", NULL},
};

static pid_status read_cell(cif_container_tp *b, const char *where, pid_structure *s,
                            pid_error *err)
{
    double *dst[6] = {&s->a, &s->b, &s->c, &s->alpha, &s->beta, &s->gamma};
    for (int i = 0; i < 6; i++) {
        cif_value_tp *v = NULL;
        block_value(b, names_cell[i], &v, NULL);
        val_state vs = value_number(v, dst[i]);
        char txt[40];
        value_text(v, txt, sizeof txt);
        cif_value_free(v);
        if (vs == VAL_ABSENT)
            return pid_fail(err, PID_ERR_FORMAT, "%s: missing %s", where, names_cell[i][0]);
        if (vs == VAL_BAD)
            return pid_fail(err, PID_ERR_FORMAT, "%s: %s '%s' is not a number", where,
                            names_cell[i][0], txt);
        int angle = i >= 3;
        if (!(*dst[i] > 0) || (angle && !(*dst[i] < 180)))
            return pid_fail(err, PID_ERR_FORMAT, "%s: %s = %g is out of range (%s)", where,
                            names_cell[i][0], *dst[i],
                            angle ? "0 < angle < 180 deg" : "length must be positive");
    }
    double vol = pid_structure_volume(s);
    if (!(vol > 1e-6))
        return pid_fail(err, PID_ERR_FORMAT,
                        "%s: cell a=%g b=%g c=%g alpha=%g beta=%g gamma=%g has zero volume", where,
                        s->a, s->b, s->c, s->alpha, s->beta, s->gamma);
    return PID_OK;
}

static const char *const names_hall[] = {
    "_space_group_name_Hall", "_symmetry_space_group_name_Hall", "_space_group.name_Hall", NULL};
static const char *const names_hm[] = {"_space_group_name_H-M_alt",
                                       "_symmetry_space_group_name_H-M",
                                       "_space_group.name_H-M_alt", NULL};
static const char *const names_number[] = {"_space_group_IT_number", "_symmetry_Int_Tables_number",
                                           "_space_group.IT_number", NULL};

static pid_status read_symmetry(cif_container_tp *b, const char *where, pid_structure *s,
                                pid_error *err)
{
    char hall[64], hm[64];
    int several;
    block_text(b, names_hall, hall, sizeof hall, &several);
    block_text(b, names_hm, hm, sizeof hm, &several);
    cif_value_tp *v = NULL;
    double num = 0;
    block_value(b, names_number, &v, NULL);
    int number = 0;
    if (value_number(v, &num) == VAL_OK && num >= 1 && num <= 230 && num == floor(num))
        number = (int)num;
    cif_value_free(v);
    s->spacegroup_number = number;

    pid_status st = read_symops(b, where, &s->n_ops, &s->rot, &s->trans, err);
    if (st || s->n_ops > 0) return st;
    if (hall[0] || hm[0] || number) {
        st = pid_spacegroup_ops(hall, hm, number, &s->n_ops, &s->rot, &s->trans, err);
        if (st) pid_error_prefix(err, "%s", where);
        return st;
    }
    PID_LOGW("%s: no symmetry operators or space group given; assuming P1", where);
    return PID_OK;
}

/* "First author et al., Journal Volume (Year) Page, doi:..." from whichever
 * citation items the block has; else the free-text reference list; else a
 * database code. */
static void read_reference(cif_container_tp *b, char *out, size_t cap)
{
    static const char *const n_journal[] = {"_citation_journal_full", "_citation_journal_abbrev",
                                            "_journal_name_full", NULL};
    static const char *const n_year[] = {"_citation_year", "_journal_year", NULL};
    static const char *const n_volume[] = {"_citation_journal_volume", "_journal_volume", NULL};
    static const char *const n_page[] = {"_citation_page_first", "_journal_page_first", NULL};
    static const char *const n_doi[] = {"_citation_DOI", "_journal_DOI", NULL};
    static const char *const n_author[] = {"_publ_author_name", "_citation_author_name", NULL};
    static const char *const n_refs[] = {"_publ_section_references", NULL};
    static const char *const n_cod[] = {"_cod_database_code", NULL};
    static const char *const n_icsd[] = {"_database_code_ICSD", NULL};
    static const char *const n_amcsd[] = {"_database_code_amcsd", NULL};
    char journal[160], year[16], volume[16], page[16], doi[96], author[96];
    int several_authors = 0, dummy;
    block_text(b, n_journal, journal, sizeof journal, &dummy);
    block_text(b, n_year, year, sizeof year, &dummy);
    block_text(b, n_volume, volume, sizeof volume, &dummy);
    block_text(b, n_page, page, sizeof page, &dummy);
    block_text(b, n_doi, doi, sizeof doi, &dummy);
    block_text(b, n_author, author, sizeof author, &several_authors);
    out[0] = '\0';
    if (journal[0] || doi[0]) {
        size_t len = 0;
#define APPEND(...)                                                                                \
    do {                                                                                           \
        if (len < cap) snprintf(out + len, cap - len, __VA_ARGS__);                                \
        len = strlen(out);                                                                         \
    } while (0)
        if (author[0]) APPEND("%s%s, ", author, several_authors ? " et al." : "");
        if (journal[0]) APPEND("%s", journal);
        if (volume[0]) APPEND(" %s", volume);
        if (year[0]) APPEND(" (%s)", year);
        if (page[0]) APPEND(" %s", page);
        if (doi[0]) APPEND("%sdoi:%s", journal[0] ? ", " : "", doi);
#undef APPEND
        return;
    }
    block_text(b, n_refs, out, cap, &dummy);
    if (out[0]) return;
    char code[32];
    block_text(b, n_cod, code, sizeof code, &dummy);
    if (code[0]) {
        snprintf(out, cap, "COD %s", code);
        return;
    }
    block_text(b, n_icsd, code, sizeof code, &dummy);
    if (code[0]) {
        snprintf(out, cap, "ICSD %s", code);
        return;
    }
    block_text(b, n_amcsd, code, sizeof code, &dummy);
    if (code[0]) snprintf(out, cap, "AMCSD %s", code);
}

static pid_status read_block(cif_container_tp *b, const char *where, pid_structure *s,
                             pid_error *err)
{
    pid_status st = read_cell(b, where, s, err);
    if (!st) st = read_symmetry(b, where, s, err);
    if (!st) st = read_sites(b, where, s, err);
    if (st) return st;
    read_reference(b, s->reference, sizeof s->reference);
    st = pid_structure_expand(s, MERGE_TOL_A, err);
    if (st) pid_error_prefix(err, "%s", where);
    return st;
}

static int block_has_sites(cif_container_tp *b)
{
    for (size_t i = 0; names_fract_x[i]; i++) {
        UChar uname[80];
        u_ascii(names_fract_x[i], uname, sizeof uname / sizeof uname[0]);
        if (cif_container_get_item_loop(b, uname, NULL) == CIF_OK) return 1;
    }
    return 0;
}

/* "dir/MnO_225.cif" -> "MnO_225". */
static void file_stem(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    const char *dot = strrchr(base, '.');
    if (dot && dot != base) n = (size_t)(dot - base);
    if (n >= cap) n = cap - 1;
    memcpy(out, base, n);
    out[n] = '\0';
}

/* libcif parses CIF 2.0 list/table values recursively, so deep nesting is
 * a stack hazard (and, stored, hit the hang described at on_item).
 * Structures need at most two levels, so input whose brackets nest deeper
 * than MAX_NESTING is refused before libcif sees it. Counted over all text,
 * quotes included: a real file never has dozens of unbalanced brackets. */
static int too_deeply_nested(const char *buf, size_t len)
{
    /* Only CIF 2.0 has list and table values; CIF 1.1 text (and junk) is
     * left to the parser, which reports it with a position. */
    if (len >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3)) buf += 3, len -= 3;
    if (len < 10 || memcmp(buf, "#\\#CIF_2.0", 10)) return 0;
    long depth = 0;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (c == '[' || c == '{') {
            if (++depth > MAX_NESTING) return 1;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return 0;
}

/* libcif 0.4.2 hangs (an endless loop while storing the value) on CIF 2.0
 * list and table values longer than a few hundred bytes: found by fuzzing,
 * "[1 1 ... 1]" with 44 elements never returns. No structure item we read
 * is a list or table, so the full pass turns every such value into '?'
 * before libcif stores it. */
static int on_item(UChar *name, cif_value_tp *value, void *context)
{
    if (value) {
        cif_kind_tp k = cif_value_kind(value);
        if ((k == CIF_LIST_KIND || k == CIF_TABLE_KIND) &&
            cif_value_init(value, CIF_UNK_KIND) != CIF_OK)
            return CIF_ERROR;
    }
    return CIF_TRAVERSE_CONTINUE;
}

/* One libcif pass over buf: syntax only when cif is NULL, else building
 * *cif (the caller destroys it, even on failure). Returns libcif's code, or
 * -1 when the buffer cannot be opened as a stream. */
static int parse_pass(const char *buf, size_t len, parse_state *ps, cif_tp **cif)
{
    FILE *f = fmemopen((void *)buf, len, "rb");
    if (!f) return -1;
    struct cif_parse_opts_s *opts = NULL;
    if (cif_parse_options_create(&opts) != CIF_OK) {
        fclose(f);
        return CIF_MEMORY_ERROR;
    }
    /* CIF 1.1 files carry no encoding mark; UTF-8 is what they are in
     * practice (and a superset of the ASCII they should be). */
    opts->default_encoding_name = "UTF-8";
    opts->error_callback = on_parse_error;
    opts->user_data = ps;
    cif_handler_tp handler = {0};
    if (cif) {
        handler.handle_item = on_item;
        opts->handler = &handler;
    }
    int rc = cif_parse(f, opts, cif);
    free(opts);
    fclose(f);
    return rc;
}

static pid_status read_cif(const char *buf, size_t len, const char *msgname, const char *source,
                           pid_structure **out, int *n_out, pid_error *err)
{
    pid_status st = PID_OK;
    cif_tp *cif = NULL;
    cif_block_tp **blocks = NULL;
    pid_structure *arr = NULL;
    int n = 0, n_struct = 0;

    if (len > PID_CIF_MAX_BYTES)
        return pid_fail(err, PID_ERR_IO, "%s: %zu bytes is more than the %u-byte CIF limit",
                        msgname, len, PID_CIF_MAX_BYTES);
    if (len == 0) return pid_fail(err, PID_ERR_PARSE, "%s: empty file, no CIF data", msgname);
    const char *nul = memchr(buf, 0, len);
    if (nul)
        return pid_fail(err, PID_ERR_PARSE, "%s: not a text file (NUL byte at offset %zu)", msgname,
                        (size_t)(nul - buf));

    if (too_deeply_nested(buf, len))
        return pid_fail(err, PID_ERR_PARSE,
                        "%s: brackets nested more than %d deep; not a crystal structure CIF",
                        msgname, MAX_NESTING);

    /* Two passes. libcif leaks memory when a parse with a CIF object is
     * aborted from the error callback (found by fuzzing: e.g. a duplicate
     * data name), so a syntax-only pass, which builds nothing, stops at the
     * first syntax error; the full pass then only meets the semantic errors
     * syntax-only mode cannot see (duplicate names), lets libcif recover
     * from them, and fails afterwards. */
    parse_state ps = {0};
    int rc = parse_pass(buf, len, &ps, NULL);
    if (rc == CIF_OK && !ps.code) {
        parse_state full = {.keep_going = 1};
        rc = parse_pass(buf, len, &full, &cif);
        if (full.code) ps = full;
    }
    if (rc == -1) {
        st = pid_fail(err, PID_ERR_NOMEM, "%s: cannot open buffer: %s", msgname, strerror(errno));
        goto done;
    }
    if (rc != CIF_OK || ps.code) {
        int code = ps.code ? ps.code : rc;
        if (ps.code)
            st = pid_fail(err, PID_ERR_PARSE, "%s:%zu:%zu: CIF syntax error: %s%s%s%s", msgname,
                          ps.line, ps.column, parse_error_str(code), ps.near[0] ? " near '" : "",
                          ps.near, ps.near[0] ? "'" : "");
        else
            st = pid_fail(err, PID_ERR_PARSE, "%s: CIF syntax error: %s (code %d)", msgname,
                          parse_error_str(code), code);
        goto done;
    }
    if (ps.n_tolerated)
        PID_LOGW("%s:%zu:%zu: %s (%d such problems ignored)", msgname, ps.tol_line, ps.tol_column,
                 parse_error_str(ps.tol_code), ps.n_tolerated);

    if (cif_get_all_blocks(cif, &blocks) != CIF_OK) {
        blocks = NULL;
        st = pid_fail(err, PID_ERR_PARSE, "%s: cannot list the data blocks", msgname);
        goto done;
    }
    int n_blocks = 0;
    while (blocks[n_blocks])
        n_blocks++;
    for (int i = 0; i < n_blocks; i++)
        n_struct += block_has_sites(blocks[i]);
    if (n_struct == 0) {
        st = pid_fail(err, PID_ERR_FORMAT,
                      "%s: no data block with atom sites (_atom_site_fract_x) in %d block%s",
                      msgname, n_blocks, n_blocks == 1 ? "" : "s");
        goto done;
    }
    arr = calloc((size_t)n_struct, sizeof *arr);
    if (!arr) {
        st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", msgname);
        goto done;
    }
    char stem[PID_NAME_LEN];
    file_stem(source, stem, sizeof stem);
    for (int i = 0; i < n_blocks; i++) {
        if (!block_has_sites(blocks[i])) continue;
        UChar *ucode = NULL;
        char code[PID_NAME_LEN] = "";
        if (cif_container_get_code(blocks[i], &ucode) == CIF_OK)
            u_to_utf8(ucode, -1, code, sizeof code);
        free(ucode);
        pid_structure *s = &arr[n++];
        if (n_struct > 1) {
            /* "stem:block", cutting the block code and then the stem to fit. */
            int code_len = (int)strlen(code), room = (int)sizeof s->name - 2;
            if (code_len > room / 2) code_len = room / 2;
            snprintf(s->name, sizeof s->name, "%.*s:%.*s", room - code_len, stem, code_len, code);
        } else {
            snprintf(s->name, sizeof s->name, "%s", stem);
        }
        snprintf(s->source, sizeof s->source, "%s", source);
        char where[PID_NAME_LEN + 600];
        snprintf(where, sizeof where, "%s: data_%s", msgname, code);
        st = read_block(blocks[i], where, s, err);
        if (st) goto done;
    }
    *out = arr;
    *n_out = n;
    arr = NULL;
done:
    if (blocks) {
        for (int i = 0; blocks[i]; i++)
            cif_container_free(blocks[i]);
        free(blocks);
    }
    if (cif && cif_destroy(cif) != CIF_OK) PID_LOGD("%s: cif_destroy failed", msgname);
    pid_structure_array_destroy(arr, n_struct);
    return st;
}

pid_status pid_cif_read_buffer(const char *buf, size_t len, const char *name, pid_structure **out,
                               int *n, pid_error *err)
{
    if (!out || !n) return pid_fail(err, PID_ERR_ARG, "pid_cif_read_buffer: NULL output");
    *out = NULL;
    *n = 0;
    if (!name) name = "(buffer)";
    if (!buf && len) return pid_fail(err, PID_ERR_ARG, "%s: NULL buffer", name);
    return read_cif(buf ? buf : "", len, name, name, out, n, err);
}

pid_status pid_cif_read(const char *path, pid_structure **out, int *n, pid_error *err)
{
    if (!out || !n || !path) return pid_fail(err, PID_ERR_ARG, "pid_cif_read: NULL argument");
    *out = NULL;
    *n = 0;
    pid_status st = PID_OK;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return pid_fail(err, PID_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = pid_fail(err, PID_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    /* Refuse before reading: a huge file is not a crystal structure. */
    if ((unsigned long long)sb.st_size > PID_CIF_MAX_BYTES) {
        st = pid_fail(err, PID_ERR_IO, "%s: %lld bytes is more than the %u-byte CIF limit", path,
                      (long long)sb.st_size, PID_CIF_MAX_BYTES);
        goto done;
    }
    size_t size = (size_t)sb.st_size;
    buf = malloc(size + 1);
    if (!buf) {
        st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory for %zu bytes", path, size);
        goto done;
    }
    size_t got = fread(buf, 1, size, f);
    if (got != size || ferror(f)) {
        st = pid_fail(err, PID_ERR_IO, "%s: read error", path);
        goto done;
    }
    st = read_cif(buf, size, path, path, out, n, err);
done:
    free(buf);
    fclose(f);
    return st;
}
