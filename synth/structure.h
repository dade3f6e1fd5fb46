/* Crystal structures: the unit cell, the symmetry operations of its space
 * group (in the cell's own basis) and every atom of the cell after symmetry
 * expansion. A pid_structure is a plain record; the functions below fill and
 * free it. Produced by cif.h (files) and consumed by the simulators. */
#ifndef PID_STRUCTURE_H
#define PID_STRUCTURE_H

#include "core/status.h"

#define PID_NAME_LEN 64
/* Symmetry expansion refuses cells with more atoms than this. */
#define PID_STRUCTURE_MAX_SITES 20000

typedef struct {
    char label[32];   /* site label as read ("Mn1", "O2") */
    char element[4];  /* element symbol ("Mn") */
    int z;            /* atomic number 1..98 */
    int charge;       /* formal charge from the type label ("Mn3+" -> 3, "O2-" -> -2), 0 if none */
    double frac[3];   /* fractional coordinates, wrapped into [0, 1) */
    double occupancy; /* 0 < occ <= 1 */
    double b_iso;     /* isotropic Debye-Waller B in angstrom^2 (0 when the file gives none) */
} pid_site;

typedef struct {
    char name[PID_NAME_LEN];    /* phase name: file stem ("MnO_225"), or stem:block */
    char formula[PID_NAME_LEN]; /* reduced formula, pymatgen's rules and order */
    char source[512];           /* where it came from ("data/phases/MnO_225.cif") */
    char reference[512];        /* literature reference named by the file, "" if none */
    double a, b, c;             /* angstrom */
    double alpha, beta, gamma;  /* degrees */
    int spacegroup_number;      /* 1..230 as found by spglib on the expanded cell */
    char spacegroup_hm[32];     /* its international (Hermann-Mauguin) symbol */
    int n_ops;                  /* symmetry operations of the structure, cell basis */
    int (*rot)[3][3];           /* x' = rot x + trans (fractional) */
    double (*trans)[3];
    int n_sites;     /* atoms in the unit cell after expansion */
    pid_site *sites; /* sites[0 .. n_asym-1] are the file's sites, in file order */
    int n_asym;      /* sites listed in the file before expansion */
} pid_structure;

/* Free the structure's arrays and the structure itself. Accepts NULL. */
void pid_structure_destroy(pid_structure *s);
/* Free an array of n structures as returned by pid_cif_read*. Accepts NULL. */
void pid_structure_array_destroy(pid_structure *arr, int n);
/* Free the arrays inside a structure that lives in an array/by value. */
void pid_structure_clear(pid_structure *s);
/* Deep copy. */
pid_status pid_structure_clone(const pid_structure *src, pid_structure **out, pid_error *err);

/* Cell volume in angstrom^3 (0 for degenerate cells). */
double pid_structure_volume(const pid_structure *s);
/* Direct (G) and reciprocal (G*) metric tensors; 1/d^2 = h^T G* h. */
void pid_structure_metric(const pid_structure *s, double g[3][3]);
void pid_structure_reciprocal_metric(const pid_structure *s, double gstar[3][3]);
/* Mass of the cell contents in amu (occupancy-weighted). */
double pid_structure_cell_mass(const pid_structure *s);
/* Formula units per cell (Z) for the reduced formula; density in g/cm^3. */
int pid_structure_formula_units(const pid_structure *s);
double pid_structure_density(const pid_structure *s);
/* Recompute s->formula from the sites: pymatgen's reduced_formula rules
 * (electronegativity order, polyanion brackets "Li2Ti(OF3)2", "Li2O2");
 * partial occupancies give amounts per formula unit with at most three
 * decimals ("Fe0.95O"). */
void pid_structure_update_formula(pid_structure *s);

/* Expand an asymmetric unit: apply the operations in s->rot/trans (identity
 * when n_ops is 0) to the first s->n_asym sites, wrap into [0, 1), drop
 * images within tol_angstrom of an atom of the same species (element, charge,
 * occupancy; species sharing a mixed site stay), then let spglib find the space
 * group of the result (filling spacegroup_number, spacegroup_hm and replacing
 * rot/trans by all operations of the structure in the cell basis, centring
 * translations included) and compute the reduced formula. spglib's tolerance
 * is 0.01 angstrom, raised to tol_angstrom when 0.01 misses operations the
 * input operations guarantee (rounded coordinates). Species at one position
 * (mixed sites) are one spglib atom; element, charge and occupancy tell
 * atoms apart. If spglib fails, or the cell has more than 2000 atoms
 * (spglib's search then takes seconds to minutes), the input operations and
 * number are kept.
 * Used by the CIF reader and by tests that build structures by hand. */
pid_status pid_structure_expand(pid_structure *s, double tol_angstrom, pid_error *err);

/* Symmetry operations of a space group from spglib's database, given a Hall
 * symbol, a Hermann-Mauguin symbol (full or short, with or without spaces,
 * e.g. "F m -3 m", "Fm-3m", "P 63/m m c", "R -3 c :H"), or a number 1..230
 * (standard setting). Returns malloc'd arrays (caller frees both). Tried in
 * that order (NULL/""/0 = absent): an unrecognized Hall symbol falls back to
 * the H-M symbol, then to the number. Without an explicit choice (":1", ":2",
 * ":H", ":R") groups with two origins get origin choice 2 and rhombohedral
 * groups hexagonal axes; short monoclinic symbols get the b-unique setting. */
pid_status pid_spacegroup_ops(const char *hall, const char *hm, int number, int *n_ops,
                              int (**rot)[3][3], double (**trans)[3], pid_error *err);
/* The spglib Hall number (1..530) the rules above pick, or 0 if none. */
int pid_spacegroup_hall_number(const char *hall, const char *hm, int number);
/* Short international symbol of a space-group number ("Fm-3m"), "" if out of range. */
const char *pid_spacegroup_symbol(int number);

/* Element symbol -> atomic number (1..98), accepting "Mn", "MN", "Mn3+", "O2-",
 * "Fe1" style labels ("D" counts as H); 0 if unknown or a word ("Wat").
 * Writes the charge when charge != NULL (0 without a sign, or for
 * non-integer states such as "Mn3.5+"). */
int pid_element_z(const char *label, int *charge);
const char *pid_element_symbol(int z); /* "" when z is out of range */
double pid_element_mass(int z);        /* amu, from xraylib; 0 when unknown */

#endif
