/* worker/gpp/lapack.h - the few LAPACK routines the GPP math uses, declared
 * by their Fortran symbols (Debian ships no lapacke.h; OpenBLAS and the
 * reference liblapack both export these).  Matrices are column-major;
 * every argument is passed by reference, and each CHARACTER argument has a
 * hidden length passed by value at the end (gfortran's convention, which
 * LAPACKE also follows; harmless where the routine is written in C).
 * Private to worker/gpp. */
#ifndef GPP_WORKER_LAPACK_H
#define GPP_WORKER_LAPACK_H

#include <stddef.h>

/* Symmetric eigenproblem, divide and conquer: on exit a holds the
 * orthonormal eigenvectors (columns), w the eigenvalues ascending. */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
             double *w, double *work, const int *lwork, int *iwork, const int *liwork,
             int *info, size_t jobz_len, size_t uplo_len);

/* Cholesky factorisation of a symmetric positive definite matrix. */
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info,
             size_t uplo_len);

/* Solve A X = B with dpotrf's factor. */
void dpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a,
             const int *lda, double *b, const int *ldb, int *info, size_t uplo_len);

#endif
