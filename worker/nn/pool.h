/* worker/nn/pool.h - a small persistent thread pool (engine-internal).
 *
 * nn_pool_run(pool, fn, arg) splits a job into T parts (T = the pool's
 * threads) and returns when all are done: fn(arg, part, T, tid) runs once
 * per part, on whichever thread claims it first (tid, 0 = the caller, picks
 * the per-thread scratch).  Work and reductions are split by part, never by
 * thread, so results are the same for a given T whichever thread ran what;
 * and when a worker is not scheduled (a busy machine) the caller does its
 * parts instead of waiting for it.  Workers spin briefly between jobs, then
 * sleep on a futex. */
#ifndef NN_POOL_H
#define NN_POOL_H

typedef struct nn_pool nn_pool;
typedef void (*nn_task_fn)(void *arg, int part, int nparts, int tid);

/* Start T-1 worker threads (T >= 1).  NULL on failure. */
nn_pool *nn_pool_new(int T);
/* Stop and join the workers; NULL is fine. */
void nn_pool_free(nn_pool *pool);
/* Number of threads, the caller included (= parts per job). */
int nn_pool_size(const nn_pool *pool);
/* Run fn(arg, part, T, tid) for part = 0..T-1; not reentrant. */
void nn_pool_run(nn_pool *pool, nn_task_fn fn, void *arg);

/* [*lo, *hi): part p of P of the range [0, n), in order, sizes differ by <= 1. */
static inline void nn_split(long n, int p, int P, long *lo, long *hi)
{
    long q = n / P, r = n % P;
    *lo = p * q + (p < r ? p : r);
    *hi = *lo + q + (p < r ? 1 : 0);
}

#endif
