/* Unit tests for synth/cif: values with standard uncertainties, several data
 * blocks, listed operators versus Hall / H-M / number symmetry, U to B
 * conversion, oxidation-state labels, references, and bad inputs (each must
 * fail with the file name and a keyword in the message, never crash). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "synth/cif.h"
#include "synth/phaselib.h"

static char tmpdir[256];

static int setup_dir(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pid_test_cif_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Write `len` bytes to tmpdir/name; returns the path (static buffer). */
static const char *write_file(const char *name, const void *data, size_t len)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    return path;
}

static const char *write_text(const char *name, const char *text)
{
    return write_file(name, text, strlen(text));
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

#define CELL_CUBIC(a)                                                                              \
    "_cell_length_a " a "\n_cell_length_b " a "\n_cell_length_c " a "\n"                           \
    "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"

/* Rock salt NaCl by H-M symbol, with su on a, U_iso and oxidation labels. */
static const char *nacl_cif = "data_NaCl\n"
                              "_journal_name_full 'Acta Crystallographica'\n"
                              "_journal_year 1999\n_journal_volume 55\n_journal_page_first 123\n"
                              "loop_\n_publ_author_name\n 'Smith, J.'\n 'Doe, A.'\n" CELL_CUBIC(
                                  "5.6402(3)") "_symmetry_space_group_name_H-M 'F m -3 m'\n"
                                               "loop_\n_atom_site_label\n_atom_site_type_symbol\n"
                                               "_atom_site_fract_x\n_atom_site_fract_y\n"
                                               "_atom_site_fract_z\n_atom_site_U_iso_or_equiv\n"
                                               "Na1 Na+ 0 0 0 0.0127(3)\n"
                                               "Cl1 Cl1- 0.5 0.5 0.5 0.0101\n";

static void test_values_su_u_and_labels(void **state)
{
    pid_structure *s = NULL;
    int n = -1;
    pid_error err;
    const char *path = write_text("NaCl_225.cif", nacl_cif);
    assert_int_equal(pid_cif_read(path, &s, &n, &err), PID_OK);
    assert_int_equal(n, 1);
    assert_string_equal(s->name, "NaCl_225");
    assert_string_equal(s->source, path);
    /* 5.6402(3) is 5.6402 with su 0.0003: the value must be exact. */
    assert_true(fabs(s->a - 5.6402) < 1e-12 && fabs(s->c - 5.6402) < 1e-12);
    assert_int_equal(s->n_asym, 2);
    assert_int_equal(s->n_sites, 8);
    assert_int_equal(s->spacegroup_number, 225);
    assert_string_equal(s->formula, "NaCl");
    /* B = 8 pi^2 U: 0.0127 -> 1.002752 A^2, 0.0101 -> 0.797464 A^2. */
    assert_true(fabs(s->sites[0].b_iso - 1.0027518) < 1e-6);
    assert_true(fabs(s->sites[1].b_iso - 0.7974640) < 1e-6);
    assert_string_equal(s->sites[0].element, "Na");
    assert_int_equal(s->sites[0].charge, 1);
    assert_int_equal(s->sites[1].z, 17);
    assert_int_equal(s->sites[1].charge, -1);
    assert_string_equal(s->sites[1].label, "Cl1");
    assert_true(s->sites[0].occupancy == 1.0);
    assert_non_null(strstr(s->reference, "Smith, J. et al."));
    assert_non_null(strstr(s->reference, "Acta Crystallographica 55 (1999) 123"));
    pid_structure_array_destroy(s, n);

    /* The same text from memory. */
    assert_int_equal(pid_cif_read_buffer(nacl_cif, strlen(nacl_cif), "mem/NaCl.cif", &s, &n, &err),
                     PID_OK);
    assert_int_equal(n, 1);
    assert_string_equal(s->name, "NaCl");
    assert_int_equal(s->n_sites, 8);
    pid_structure_array_destroy(s, n);
}

/* Rutile TiO2 (P4_2/mnm, No. 136): listed operators (the 16 of ITA), the
 * Hall symbol -P 4n 2n, the H-M symbol and the bare number must give the
 * same 6 atoms (Ti 2a, O 4f). */
#define RUTILE_HEAD                                                                                \
    "_cell_length_a 4.5937\n_cell_length_b 4.5937\n_cell_length_c 2.9587\n"                        \
    "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
#define RUTILE_SITES                                                                               \
    "loop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"        \
    "_atom_site_occupancy\nTi1 0 0 0 1.0\nO1 0.30478 0.30478 0 1\n"

static void test_symops_vs_symbols(void **state)
{
    const char *variants[] = {
        "data_rutile\n" RUTILE_HEAD "loop_\n_space_group_symop_operation_xyz\n"
        "'x, y, z' '-x, -y, z' '-y+1/2, x+1/2, z+1/2' 'y+1/2, -x+1/2, z+1/2'\n"
        "'-x+1/2, y+1/2, -z+1/2' 'x+1/2, -y+1/2, -z+1/2' 'y, x, -z' '-y, -x, -z'\n"
        "'-x, -y, -z' 'x, y, -z' 'y+1/2, -x+1/2, -z+1/2' '-y+1/2, x+1/2, -z+1/2'\n"
        "'x+0.5, -y+0.5, z+0.5' '-x+0.5, y+0.5, z+0.5' '-y, -x, z' '+y, +x, +z'\n" RUTILE_SITES,
        "data_rutile\n" RUTILE_HEAD "_space_group_name_Hall '-P 4n 2n'\n" RUTILE_SITES,
        "data_rutile\n" RUTILE_HEAD "_symmetry_space_group_name_H-M 'P 42/m n m'\n" RUTILE_SITES,
        "data_rutile\n" RUTILE_HEAD "_space_group_IT_number 136\n" RUTILE_SITES,
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        pid_structure *s = NULL;
        int n = 0;
        pid_error err;
        pid_status st =
            pid_cif_read_buffer(variants[i], strlen(variants[i]), "rutile.cif", &s, &n, &err);
        if (st) {
            print_error("variant %zu: %s\n", i, err.msg);
            fail();
        }
        assert_int_equal(n, 1);
        assert_int_equal(s->n_sites, 6);
        assert_int_equal(s->spacegroup_number, 136);
        assert_int_equal(s->n_ops, 16);
        assert_string_equal(s->formula, "TiO2");
        pid_structure_array_destroy(s, n);
    }
}

/* Operators with mixed forms ("x-y,x,z+1/6"): P6_1 (No. 169) has 6 general
 * positions. */
static void test_symop_forms(void **state)
{
    const char *cif = "data_p61\n"
                      "_cell_length_a 6.0\n_cell_length_b 6.0\n_cell_length_c 10.0\n"
                      "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 120\n"
                      "loop_\n_symmetry_equiv_pos_site_id\n_symmetry_equiv_pos_as_xyz\n"
                      "1 x,y,z\n2 x-y,x,z+1/6\n3 -y,x-y,1/3+z\n4 -x,-y,z+0.5\n"
                      "5 -x+y,-x,z+2/3\n6 Y,-X+Y,Z+5/6\n"
                      "loop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n"
                      "_atom_site_fract_z\nSi1 0.13 0.27 0.05\n";
    pid_structure *s = NULL;
    int n = 0;
    pid_error err;
    assert_int_equal(pid_cif_read_buffer(cif, strlen(cif), "p61.cif", &s, &n, &err), PID_OK);
    assert_int_equal(s->n_sites, 6);
    assert_int_equal(s->spacegroup_number, 169);
    pid_structure_array_destroy(s, n);

    /* Malformed operators are named in the error. */
    const char *bad[] = {"x,y", "x,y,z,1", "x,y,q", "x,x,z", "x+,y,z", "x,y,z/0", "1/2,y,z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[1024];
        snprintf(buf, sizeof buf,
                 "data_b\n" CELL_CUBIC("4.0") "loop_\n_symmetry_equiv_pos_as_xyz\n'%s'\n"
                                              "loop_\n_atom_site_label\n_atom_site_fract_x\n"
                                              "_atom_site_fract_y\n_atom_site_fract_z\n"
                                              "Cu1 0 0 0\n",
                 bad[i]);
        pid_error_clear(&err);
        s = (void *)1;
        assert_int_not_equal(pid_cif_read_buffer(buf, strlen(buf), "ops.cif", &s, &n, &err),
                             PID_OK);
        assert_null(s);
        assert_int_equal(n, 0);
        if (!strstr(err.msg, "ops.cif") || !strstr(err.msg, "symmetry operator") ||
            !strstr(err.msg, bad[i])) {
            print_error("operator '%s': message '%s'\n", bad[i], err.msg);
            fail();
        }
    }
}

/* Several blocks: two structures ("stem:block") and one without atom sites,
 * which is skipped. */
static void test_multiple_blocks(void **state)
{
    const char *cif =
        "data_global\n_publ_contact_author_name 'Someone'\n"
        "data_cu\n" CELL_CUBIC(
            "3.615") "_space_group_name_H-M_alt 'F m -3 m'\n"
                     "_citation_journal_full 'J. Test'\n_citation_year 2001\n"
                     "_citation_DOI 10.1000/xyz\n"
                     "loop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n"
                     "_atom_site_fract_z\nCu1 0 0 0\n"
                     "data_fe\n" CELL_CUBIC(
                         "2.8665") "_symmetry_Int_Tables_number 229\n"
                                   "loop_\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_"
                                   "fract_y\n"
                                   "_atom_site_fract_z\n_atom_site_B_iso_or_equiv\nFe 0 0 0 0.35\n";
    const char *path = write_text("metals.cif", cif);
    pid_structure *s = NULL;
    int n = 0;
    pid_error err;
    assert_int_equal(pid_cif_read(path, &s, &n, &err), PID_OK);
    assert_int_equal(n, 2);
    assert_string_equal(s[0].name, "metals:cu");
    assert_string_equal(s[1].name, "metals:fe");
    assert_int_equal(s[0].n_sites, 4); /* fcc */
    assert_int_equal(s[1].n_sites, 2); /* bcc */
    assert_int_equal(s[0].spacegroup_number, 225);
    assert_int_equal(s[1].spacegroup_number, 229);
    assert_true(fabs(s[1].sites[0].b_iso - 0.35) < 1e-12);
    assert_string_equal(s[1].sites[0].label, "Fe"); /* no label: the type symbol */
    assert_non_null(strstr(s[0].reference, "J. Test (2001)"));
    assert_non_null(strstr(s[0].reference, "doi:10.1000/xyz"));
    /* Densities: Cu 8.96, alpha-Fe 7.87 g/cm^3 (CRC Handbook), 1 %. */
    assert_true(fabs(pid_structure_density(&s[0]) - 8.96) < 0.09);
    assert_true(fabs(pid_structure_density(&s[1]) - 7.87) < 0.08);
    pid_structure_array_destroy(s, n);
}

/* Accented author names in Latin-1 (not UTF-8) do not stop the reader. */
static void test_latin1_tolerated(void **state)
{
    char cif[1024];
    snprintf(cif, sizeof cif,
             "data_x\n_publ_author_name 'M\xfcller, J.'\n# Caf\xe9\n" CELL_CUBIC(
                 "4.0") "loop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n"
                        "_atom_site_fract_z\nPo1 0 0 0\n");
    pid_structure *s = NULL;
    int n = 0;
    pid_error err;
    pid_status st = pid_cif_read_buffer(cif, strlen(cif), "latin1.cif", &s, &n, &err);
    if (st) {
        print_error("%s\n", err.msg);
        fail();
    }
    assert_int_equal(s->n_sites, 1);
    assert_int_equal(s->spacegroup_number, 221); /* simple cubic polonium, P1 given: Pm-3m */
    pid_structure_array_destroy(s, n);
}

/* Guards around libcif 0.4.2 defects (see synth/cif.c): CIF 2.0 lists and
 * tables longer than a few hundred bytes made libcif loop forever while
 * storing them, and nesting is parsed recursively. A CIF 2.0 structure with
 * such values must still read, within 2 s; absurd nesting is refused. */
static void test_cif2_guards(void **state)
{
    char list[400] = "[";
    for (int i = 0; i < 100; i++)
        strcat(list, "1 ");
    strcat(list, "]");
    char cif[2048];
    snprintf(cif, sizeof cif,
             "#\\#CIF_2.0\ndata_cu\n" CELL_CUBIC(
                 "3.615") "_space_group_name_H-M_alt 'F m -3 m'\n"
                          "_extra %s\n_extra_table {\"k\":%s}\n"
                          "loop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n"
                          "_atom_site_fract_z\n_atom_site_extra\nCu1 0 0 0 %s\n",
             list, list, list);
    pid_structure *s = NULL;
    int n = 0;
    pid_error err;
    double t0 = seconds_now();
    pid_status st = pid_cif_read_buffer(cif, strlen(cif), "cif2.cif", &s, &n, &err);
    double dt = seconds_now() - t0;
    if (st) {
        print_error("%s\n", err.msg);
        fail();
    }
    assert_true(dt < 2.0);
    assert_int_equal(s->n_sites, 4);
    assert_int_equal(s->spacegroup_number, 225);
    pid_structure_array_destroy(s, n);

    char deep[256];
    snprintf(deep, sizeof deep, "#\\#CIF_2.0\ndata_x\n_a %.*s1%.*s\n", 40,
             "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", 40,
             "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    s = (void *)1;
    assert_int_equal(pid_cif_read_buffer(deep, strlen(deep), "deep.cif", &s, &n, &err),
                     PID_ERR_PARSE);
    assert_null(s);
    assert_non_null(strstr(err.msg, "deep.cif"));
    assert_non_null(strstr(err.msg, "nested"));
}

/* A bad input must fail with status != OK, no output, and a message that
 * names the file and contains the keyword. */
static void expect_failure_file(const char *path, const char *label, const char *keyword)
{
    pid_structure *s = (void *)1;
    int n = 7;
    pid_error err;
    pid_error_clear(&err);
    pid_status st = pid_cif_read(path, &s, &n, &err);
    if (st == PID_OK || s != NULL || n != 0 || !strstr(err.msg, label) ||
        !strstr(err.msg, keyword)) {
        print_error("%s: status %d, n %d, message '%s' (want '%s' and '%s')\n", path, st, n,
                    err.msg, label, keyword);
        pid_structure_array_destroy(st == PID_OK ? s : NULL, n);
        fail();
    }
    assert_int_equal(err.code, st);
}

#define SITES_CU                                                                                   \
    "loop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"        \
    "_atom_site_occupancy\nCu1 0 0 0 1\n"

static void test_bad_inputs(void **state)
{
    struct {
        const char *file, *text, *keyword;
    } cases[] = {
        /* Cut inside a quoted string, inside a loop row, and after a name. */
        {"trunc1.cif", "data_t\n" CELL_CUBIC("4.0") "_symmetry_space_group_name_H-M 'F m -3",
         "syntax error"},
        {"trunc2.cif", "data_t\n" CELL_CUBIC("4.0") SITES_CU "O1 0.5 0.5", "syntax error"},
        {"trunc3.cif", "data_t\n" CELL_CUBIC("4.0") "_symmetry_Int_Tables_number", "syntax error"},
        {"nocell.cif", "data_t\n_cell_length_a 4\n_cell_length_c 4\n" SITES_CU, "_cell_length_b"},
        {"unknown.cif",
         "data_t\n" CELL_CUBIC("4.0") "loop_\n_atom_site_label\n_atom_site_fract_x\n"
                                      "_atom_site_fract_y\n_atom_site_fract_z\nXx1 0 0 0\n",
         "unknown element 'Xx1'"},
        {"flat.cif",
         "data_t\n_cell_length_a 4\n_cell_length_b 4\n_cell_length_c 4\n"
         "_cell_angle_alpha 120\n_cell_angle_beta 120\n_cell_angle_gamma 120\n" SITES_CU,
         "zero volume"},
        {"zero_a.cif", "data_t\n" CELL_CUBIC("0") SITES_CU, "_cell_length_a"},
        {"nan.cif", "data_t\n" CELL_CUBIC("NaN") SITES_CU, "not a number"},
        {"inf.cif", "data_t\n" CELL_CUBIC("1e999") SITES_CU, "not a number"},
        {"angle.cif",
         "data_t\n_cell_length_a 4\n_cell_length_b 4\n_cell_length_c 4\n"
         "_cell_angle_alpha 190\n_cell_angle_beta 90\n_cell_angle_gamma 90\n" SITES_CU,
         "_cell_angle_alpha"},
        {"occ.cif",
         "data_t\n" CELL_CUBIC(
             "4.0") "loop_\n_atom_site_label\n_atom_site_fract_x\n"
                    "_atom_site_fract_y\n_atom_site_fract_z\n_atom_site_occupancy\nCu1 0 0 0 1.5\n",
         "occupancy"},
        {"occ0.cif",
         "data_t\n" CELL_CUBIC(
             "4.0") "loop_\n_atom_site_label\n_atom_site_fract_x\n"
                    "_atom_site_fract_y\n_atom_site_fract_z\n_atom_site_occupancy\nCu1 0 0 0 0\n",
         "occupancy"},
        {"xnan.cif",
         "data_t\n" CELL_CUBIC("4.0") "loop_\n_atom_site_label\n_atom_site_fract_x\n"
                                      "_atom_site_fract_y\n_atom_site_fract_z\nCu1 nan 0 0\n",
         "_atom_site_fract_x"},
        {"xmissing.cif",
         "data_t\n" CELL_CUBIC("4.0") "loop_\n_atom_site_label\n_atom_site_fract_x\n"
                                      "_atom_site_fract_y\n_atom_site_fract_z\nCu1 ? 0 0\n",
         "missing"},
        {"badsg.cif",
         "data_t\n" CELL_CUBIC("4.0") "_symmetry_space_group_name_H-M 'Q 42'\n" SITES_CU,
         "unknown space group"},
        {"nosites.cif", "data_t\n" CELL_CUBIC("4.0") "_symmetry_Int_Tables_number 225\n",
         "no data block with atom sites"},
        {"prose.cif", "This is not a CIF file at all.\n", "syntax error"},
        {"empty.cif", "", "empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = write_text(cases[i].file, cases[i].text);
        expect_failure_file(path, cases[i].file, cases[i].keyword);
    }

    /* Binary: NUL bytes. */
    const char bin[] = "data_x\n\0\0\0\x01\x02_cell_length_a 4\n";
    expect_failure_file(write_file("binary.cif", bin, sizeof bin), "binary.cif", "not a text file");
    /* A path that does not exist, and a folder. */
    expect_failure_file("/nonexistent/dir/none.cif", "none.cif", "cannot open");
    expect_failure_file(tmpdir, tmpdir, "not a regular file");

    /* Larger than PID_CIF_MAX_BYTES: refused from the size alone (a sparse
     * file, so nothing is written or read). */
    char big[512];
    snprintf(big, sizeof big, "%s/huge.cif", tmpdir);
    FILE *f = fopen(big, "wb");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), (off_t)PID_CIF_MAX_BYTES + 1), 0);
    fclose(f);
    expect_failure_file(big, "huge.cif", "limit");
    unlink(big);

    /* NULL arguments. */
    pid_error err;
    pid_structure *s = NULL;
    int n = 0;
    assert_int_equal(pid_cif_read(NULL, &s, &n, &err), PID_ERR_ARG);
    assert_int_equal(pid_cif_read_buffer(NULL, 5, "x", &s, &n, &err), PID_ERR_ARG);
}

/* 10 MB of random bytes: refused at once (NUL bytes), and with the NULs
 * replaced the parser must stop at the first error, well inside 5 s. */
static void test_random_junk(void **state)
{
    size_t len = 10u * 1024u * 1024u;
    unsigned char *buf = malloc(len);
    assert_non_null(buf);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
        buf[i] = (unsigned char)(x >> 24);
    }
    const char *path = write_file("junk.cif", buf, len);
    double t0 = seconds_now();
    expect_failure_file(path, "junk.cif", "not a text file");
    for (size_t i = 0; i < len; i++)
        if (!buf[i]) buf[i] = ' ';
    path = write_file("junk2.cif", buf, len);
    expect_failure_file(path, "junk2.cif", "junk2.cif:1:");
    expect_failure_file(path, "junk2.cif", "CIF syntax error");
    /* Random printable text with a valid header: still fails fast. */
    memcpy(buf, "data_junk\n", 10);
    for (size_t i = 10; i < len; i++)
        buf[i] = (unsigned char)(' ' + buf[i] % 95);
    path = write_file("junk3.cif", buf, len);
    expect_failure_file(path, "junk3.cif", "junk3.cif");
    double dt = seconds_now() - t0;
    if (!(dt < 5.0)) {
        print_error("junk took %.2f s\n", dt);
        fail();
    }
    free(buf);
}

/* The phase library over a folder: name order, find, and a failing file
 * failing the whole load with its name. */
static void test_phaselib(void **state)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/lib", tmpdir);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/b_nacl.cif", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(nacl_cif, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/a_cu.CIF", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("data_cu\n" CELL_CUBIC("3.615") "_space_group_IT_number 225\n" SITES_CU, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("not a cif\n", f);
    fclose(f);

    pid_phaselib *lib = NULL;
    pid_error err;
    assert_int_equal(pid_phaselib_load(dir, &lib, &err), PID_OK);
    assert_int_equal(pid_phaselib_count(lib), 2);
    assert_string_equal(pid_phaselib_get(lib, 0)->name, "a_cu");
    assert_string_equal(pid_phaselib_get(lib, 1)->name, "b_nacl");
    assert_null(pid_phaselib_get(lib, 2));
    assert_null(pid_phaselib_get(lib, -1));
    assert_ptr_equal(pid_phaselib_find(lib, "b_nacl"), pid_phaselib_get(lib, 1));
    assert_ptr_equal(pid_phaselib_find(lib, "B_NaCl"), pid_phaselib_get(lib, 1));
    assert_int_equal(pid_phaselib_index(lib, "a_cu"), 0);
    assert_null(pid_phaselib_find(lib, "zz"));
    assert_string_equal(pid_phaselib_dir(lib), dir);
    pid_phaselib_destroy(lib);
    pid_phaselib_destroy(NULL);

    snprintf(path, sizeof path, "%s/c_bad.cif", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("data_bad\n_cell_length_a 4\n" SITES_CU, f);
    fclose(f);
    lib = (void *)1;
    assert_int_equal(pid_phaselib_load(dir, &lib, &err), PID_ERR_FORMAT);
    assert_null(lib);
    assert_non_null(strstr(err.msg, "c_bad.cif"));
    assert_non_null(strstr(err.msg, "_cell_length_b"));

    assert_int_not_equal(pid_phaselib_load("/nonexistent/phases", &lib, &err), PID_OK);
    assert_non_null(strstr(err.msg, "/nonexistent/phases"));
    snprintf(dir, sizeof dir, "%s/emptylib", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_not_equal(pid_phaselib_load(dir, &lib, &err), PID_OK);
    assert_non_null(strstr(err.msg, "no *.cif"));

    /* "builtin" follows $PHASEID_DATA. */
    char bdir[600];
    setenv("PHASEID_DATA", tmpdir, 1);
    assert_int_equal(pid_phaselib_builtin_dir(bdir, sizeof bdir, &err), PID_OK);
    snprintf(path, sizeof path, "%s/phases", tmpdir);
    assert_string_equal(bdir, path);
    unsetenv("PHASEID_DATA");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_su_u_and_labels),
        cmocka_unit_test(test_symops_vs_symbols),
        cmocka_unit_test(test_symop_forms),
        cmocka_unit_test(test_multiple_blocks),
        cmocka_unit_test(test_latin1_tolerated),
        cmocka_unit_test(test_cif2_guards),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_random_junk),
        cmocka_unit_test(test_phaselib),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
