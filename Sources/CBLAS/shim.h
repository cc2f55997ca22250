// BLAS and LAPACK: Accelerate on Apple platforms; elsewhere OpenBLAS (CBLAS) and LAPACKE from Debian's
// libopenblas-dev and liblapacke-dev. Package.swift links the platform's libraries; LowRA's Swift code
// calls CBLAS and the lowra_* functions of lowra_linear_algebra.h, never LAPACKE or OpenBLAS directly.
#if defined(__APPLE__)
#define ACCELERATE_NEW_LAPACK
#include <Accelerate/Accelerate.h>
#else
#include <cblas.h>
#include <lapacke.h>
#endif
#include "lowra_linear_algebra.h"
