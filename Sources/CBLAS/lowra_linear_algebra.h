// The LAPACK calls LowRA makes, on row-major matrices, through one of two routes:
//   - LAPACKE's row-major interface (Debian's liblapacke-dev over OpenBLAS): Linux and elsewhere;
//   - the column-major Fortran interface every LAPACK has (Accelerate on Apple platforms, which has
//     no LAPACKE): a row-major matrix is its transpose in column-major order, so each call solves the
//     transposed problem (SVD of Aᵀ with U and Vᵀ swapped, LQ of Xᵀ for the QR of X, the other
//     triangle for Cholesky).
// Both routes are compiled wherever LAPACK is present, so the column-major one is tested on Linux
// against LAPACKE (LinearAlgebraTests); `lowra_*` picks the platform's (the column-major one for the
// triangular factorizations, which it solves without a copy). The BLAS thread controls are
// OpenBLAS's; Accelerate manages its own threads.
#ifndef LOWRA_LINEAR_ALGEBRA_H
#define LOWRA_LINEAR_ALGEBRA_H

#include <stdlib.h>

// The Fortran interface: Accelerate's sgesdd_ & co.; elsewhere lapack.h's LAPACK_sgesdd & co., which pass
// the hidden lengths of the character arguments where the library's Fortran ABI has them.
#if defined(__APPLE__)
typedef __LAPACK_int lowra_lapack_int;
#define LOWRA_LAPACK(name) name##_
#else
typedef lapack_int lowra_lapack_int;
#define LOWRA_LAPACK(name) LAPACK_##name
#endif

// ---------------------------------------------------------------------------------------------
// The column-major route.

/// A = U diag(s) Vᵀ for row-major A (m × n), k = min(m, n): u (m × k) and vt (k × n) row-major.
/// Returns LAPACK's info (0: done); a is overwritten.
static inline int lowra_sgesdd_colmajor(int m, int n, float *a, float *s, float *u, float *vt) {
    // Column-major, a is Aᵀ (n × m) = V Σ Uᵀ: LAPACK's U is V (n × k, row-major vt), its Vᵀ is Uᵀ (k × m,
    // row-major u).
    const lowra_lapack_int mm = n, nn = m, k = m < n ? m : n, lwork_query = -1;
    lowra_lapack_int info = 0, *iwork = malloc(sizeof(lowra_lapack_int) * 8 * (size_t)(k > 0 ? k : 1));
    float size = 0;
    LOWRA_LAPACK(sgesdd)("S", &mm, &nn, a, &mm, s, vt, &mm, u, &k, &size, &lwork_query, iwork, &info);
    const lowra_lapack_int lwork = (lowra_lapack_int)size + 1;
    float *work = info == 0 ? malloc(sizeof(float) * (size_t)lwork) : NULL;
    const int allocated = work != NULL && iwork != NULL;
    if (allocated) LOWRA_LAPACK(sgesdd)("S", &mm, &nn, a, &mm, s, vt, &mm, u, &k, work, &lwork, iwork, &info);
    free(work);
    free(iwork);
    return allocated || info ? (int)info : -1000;
}

/// The first n columns of Q (m × n, m >= n) of X = QR, row-major, in place; diag_r (n) receives R's
/// diagonal. Returns LAPACK's info.
static inline int lowra_orthonormalize_colmajor(int m, int n, float *x, float *diag_r) {
    // Column-major, x is Xᵀ (n × m) = L Q' with L = Rᵀ and Q' = Qᵀ: its rows are Q's columns.
    const lowra_lapack_int mm = n, nn = m, lwork_query = -1;
    lowra_lapack_int info = 0;
    float size = 0, *tau = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    LOWRA_LAPACK(sgelqf)(&mm, &nn, x, &mm, tau, &size, &lwork_query, &info);
    lowra_lapack_int lwork = (lowra_lapack_int)size + 1;
    float *work = info == 0 ? malloc(sizeof(float) * (size_t)lwork) : NULL;
    const int allocated = work != NULL && tau != NULL;
    if (allocated) LOWRA_LAPACK(sgelqf)(&mm, &nn, x, &mm, tau, work, &lwork, &info);
    for (int i = 0; allocated && info == 0 && i < n; i++) diag_r[i] = x[(size_t)i * n + i];
    if (allocated && info == 0) {
        float q = 0;
        LOWRA_LAPACK(sorglq)(&mm, &nn, &mm, x, &mm, tau, &q, &lwork_query, &info);
        if (info == 0 && (lowra_lapack_int)q + 1 > lwork) {
            lwork = (lowra_lapack_int)q + 1;
            float *more = realloc(work, sizeof(float) * (size_t)lwork);
            if (!more) info = -1000;
            else work = more;
        }
        if (info == 0) LOWRA_LAPACK(sorglq)(&mm, &nn, &mm, x, &mm, tau, work, &lwork, &info);
    }
    free(work);
    free(tau);
    return allocated || info ? (int)info : -1000;
}

/// Cholesky of a row-major symmetric matrix (n × n): upper (A = UᵀU in the upper triangle) or lower.
/// Row-major upper is column-major lower. Returns LAPACK's info (> 0: not positive definite there).
static inline int lowra_spotrf_colmajor(int upper, int n, float *a) {
    const lowra_lapack_int nn = n;
    lowra_lapack_int info = 0;
    LOWRA_LAPACK(spotrf)(upper ? "L" : "U", &nn, a, &nn, &info);
    return (int)info;
}

/// The inverse of A from its row-major lower Cholesky factor, into the lower triangle.
static inline int lowra_spotri_lower_colmajor(int n, float *a) {
    const lowra_lapack_int nn = n;
    lowra_lapack_int info = 0;
    LOWRA_LAPACK(spotri)("U", &nn, a, &nn, &info);
    return (int)info;
}

/// The inverse of a row-major upper-triangular matrix (n × n), in place (row-major upper is column-major lower).
static inline int lowra_strtri_upper_colmajor(int n, float *a) {
    const lowra_lapack_int nn = n;
    lowra_lapack_int info = 0;
    LOWRA_LAPACK(strtri)("L", "N", &nn, a, &nn, &info);
    return (int)info;
}

// ---------------------------------------------------------------------------------------------
// The LAPACKE route, and the platform's choice.

#if !defined(__APPLE__)
static inline int lowra_sgesdd_lapacke(int m, int n, float *a, float *s, float *u, float *vt) {
    const int k = m < n ? m : n;
    return LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', m, n, a, n, s, u, k, vt, n);
}
static inline int lowra_orthonormalize_lapacke(int m, int n, float *x, float *diag_r) {
    float *tau = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    int info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, m, n, x, n, tau);
    for (int i = 0; info == 0 && i < n; i++) diag_r[i] = x[(size_t)i * n + i];
    if (info == 0) info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, m, n, n, x, n, tau);
    free(tau);
    return info;
}
static inline int lowra_spotrf_lapacke(int upper, int n, float *a) {
    return LAPACKE_spotrf(LAPACK_ROW_MAJOR, upper ? 'U' : 'L', n, a, n);
}
static inline int lowra_spotri_lower_lapacke(int n, float *a) { return LAPACKE_spotri(LAPACK_ROW_MAJOR, 'L', n, a, n); }
static inline int lowra_strtri_upper_lapacke(int n, float *a) {
    return LAPACKE_strtri(LAPACK_ROW_MAJOR, 'U', 'N', n, a, n);
}

#define LOWRA_ROUTE(name) name##_lapacke
static inline int lowra_blas_threads(void) { return openblas_get_num_threads(); }
static inline void lowra_set_blas_threads(int n) { openblas_set_num_threads(n); }
static inline const char *lowra_blas_core(void) { return openblas_get_corename(); }
#else
#define LOWRA_ROUTE(name) name##_colmajor
static inline int lowra_blas_threads(void) { return 0; }  // Accelerate decides
static inline void lowra_set_blas_threads(int n) { (void)n; }
static inline const char *lowra_blas_core(void) { return "Accelerate"; }
#endif

// The platform's route.
static inline int lowra_sgesdd(int m, int n, float *a, float *s, float *u, float *vt) {
    return LOWRA_ROUTE(lowra_sgesdd)(m, n, a, s, u, vt);
}
static inline int lowra_orthonormalize(int m, int n, float *x, float *diag_r) {
    return LOWRA_ROUTE(lowra_orthonormalize)(m, n, x, diag_r);
}
// Cholesky, its inverse and triangular inverses take the column-major route everywhere: for a symmetric or
// triangular matrix it only swaps which triangle LAPACK reads, where LAPACKE's row-major interface transposes
// into an n × n copy and back (485 MB beside the input for a 7B model's down_proj).
static inline int lowra_spotrf(int upper, int n, float *a) { return lowra_spotrf_colmajor(upper, n, a); }
static inline int lowra_spotri_lower(int n, float *a) { return lowra_spotri_lower_colmajor(n, a); }
static inline int lowra_strtri_upper(int n, float *a) { return lowra_strtri_upper_colmajor(n, a); }

#endif
