/* Plain data shared by the XRD structure-factor code (synth/xrd.c) and the
 * profile renderer op (kernels/xrd_render.*): one reflection family of one
 * phase at its unstrained cell. Nothing here knows about files or phases. */
#ifndef PID_XRD_TYPES_H
#define PID_XRD_TYPES_H

/* Preferred-orientation axes tried by the texture augmentation, as reciprocal
 * lattice directions: [001]*, [100]*, [110]*, [111]* (index 0..3). */
#define PID_TEX_AXES 4
/* Distinct cos^2(angle to axis) values kept per family and axis. */
#define PID_TEX_NCOS 6

typedef struct {
    float hkl[3]; /* representative Miller indices of the family */
    float f2m;    /* |F|^2 * multiplicity, Debye-Waller included, no Lorentz-polarization */
    /* March-Dollase needs the angle between each member of the family and the
     * texture axis; members share few distinct angles, so store those with
     * the fraction of members at each (weights sum to 1 per axis). */
    float tex_cos2[PID_TEX_AXES][PID_TEX_NCOS];
    float tex_w[PID_TEX_AXES][PID_TEX_NCOS];
} k_xrd_refl;

#endif
