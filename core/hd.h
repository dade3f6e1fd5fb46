/* Portability macros for code compiled both by the C compiler and by nvcc. */
#ifndef PID_HD_H
#define PID_HD_H
#ifdef __CUDACC__
#define PID_HD __host__ __device__
#define PID_INLINE __forceinline__
#else
#define PID_HD
#define PID_INLINE inline
#endif
#endif
