/* The engine's thread pool (see pool.h).
 *
 * A job is published as one 64-bit word, claim = (generation << 16) | next
 * part; threads claim parts with a compare-and-swap that also checks the
 * generation, so a thread that wakes late cannot take a part of a later
 * job.  `done` counts finished parts; the caller returns when it reaches T.
 * Futex words: `gen` (workers sleep on it between jobs) and `done_seq`
 * (the caller sleeps on it when a claimed part is still running). */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pool.h"

#define NN_POOL_SPIN 4000    /* polls (~50-100 us) before sleeping */

struct nn_pool {
    int T;
    pthread_t *threads;
    nn_task_fn fn;             /* the current job (valid while parts remain) */
    void *arg;
    uint64_t claim;            /* (gen << 16) | next part (__atomic) */
    unsigned gen;              /* job generation; futex word (__atomic) */
    unsigned done;             /* parts finished in this job (__atomic) */
    unsigned done_seq;         /* bumped when the last part finishes; futex word */
    int sleepers;              /* workers asleep on gen (__atomic) */
    int caller_sleeping;       /* (__atomic) */
    int stop;                  /* (__atomic) */
};

struct worker_arg {
    nn_pool *pool;
    int tid;
};

static void futex_wait(unsigned *addr, unsigned val)
{
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(unsigned *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Claim and run parts of job `g` until none is left. */
static void run_parts(nn_pool *pool, unsigned g, int tid)
{
    for (;;) {
        uint64_t w = __atomic_load_n(&pool->claim, __ATOMIC_ACQUIRE);
        if ((unsigned)(w >> 16) != (g & 0xffffffffu) || (int)(w & 0xffff) >= pool->T) return;
        if (!__atomic_compare_exchange_n(&pool->claim, &w, w + 1, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            continue;
        pool->fn(pool->arg, (int)(w & 0xffff), pool->T, tid);
        if (__atomic_add_fetch(&pool->done, 1u, __ATOMIC_ACQ_REL) == (unsigned)pool->T) {
            __atomic_fetch_add(&pool->done_seq, 1u, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&pool->caller_sleeping, __ATOMIC_SEQ_CST))
                futex_wake(&pool->done_seq);
        }
    }
}

static void *worker_main(void *p)
{
    struct worker_arg wa = *(struct worker_arg *)p;
    free(p);
    nn_pool *pool = wa.pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = __atomic_load_n(&pool->gen, __ATOMIC_ACQUIRE)) == seen) {
            if (++spins < NN_POOL_SPIN) {
                cpu_relax();
                continue;
            }
            __atomic_fetch_add(&pool->sleepers, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&pool->gen, __ATOMIC_SEQ_CST) == seen) futex_wait(&pool->gen, seen);
            __atomic_fetch_sub(&pool->sleepers, 1, __ATOMIC_SEQ_CST);
            spins = 0;
        }
        seen = g;
        if (__atomic_load_n(&pool->stop, __ATOMIC_ACQUIRE)) return NULL;
        run_parts(pool, g, wa.tid);
    }
}

/* nn_pool_new: see pool.h. */
nn_pool *nn_pool_new(int T)
{
    if (T < 1) T = 1;
    if (T > 0xffff) return NULL;
    nn_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->T = T;
    if (T == 1) return pool;
    pool->threads = calloc((size_t)T - 1, sizeof(pthread_t));
    if (!pool->threads) {
        free(pool);
        return NULL;
    }
    for (int t = 1; t < T; t++) {
        struct worker_arg *wa = malloc(sizeof *wa);
        if (wa) {
            wa->pool = pool;
            wa->tid = t;
        }
        if (!wa || pthread_create(&pool->threads[t - 1], NULL, worker_main, wa) != 0) {
            free(wa);
            pool->T = t;   /* join the ones started */
            nn_pool_free(pool);
            return NULL;
        }
    }
    return pool;
}

/* nn_pool_free: see pool.h. */
void nn_pool_free(nn_pool *pool)
{
    if (!pool) return;
    if (pool->T > 1) {
        __atomic_store_n(&pool->stop, 1, __ATOMIC_RELEASE);
        __atomic_fetch_add(&pool->gen, 1u, __ATOMIC_SEQ_CST);
        futex_wake(&pool->gen);
        for (int t = 1; t < pool->T; t++) pthread_join(pool->threads[t - 1], NULL);
    }
    free(pool->threads);
    free(pool);
}

/* nn_pool_size: see pool.h. */
int nn_pool_size(const nn_pool *pool)
{
    return pool ? pool->T : 1;
}

/* nn_pool_run: see pool.h. */
void nn_pool_run(nn_pool *pool, nn_task_fn fn, void *arg)
{
    if (!pool || pool->T == 1) {
        fn(arg, 0, 1, 0);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    __atomic_store_n(&pool->done, 0u, __ATOMIC_RELAXED);
    unsigned ds = __atomic_load_n(&pool->done_seq, __ATOMIC_ACQUIRE);
    unsigned g = __atomic_load_n(&pool->gen, __ATOMIC_RELAXED) + 1;
    __atomic_store_n(&pool->claim, (uint64_t)g << 16, __ATOMIC_RELEASE);
    __atomic_store_n(&pool->gen, g, __ATOMIC_SEQ_CST);   /* pairs with sleepers */
    if (__atomic_load_n(&pool->sleepers, __ATOMIC_SEQ_CST) > 0) futex_wake(&pool->gen);
    run_parts(pool, g, 0);
    int spins = 0;
    while (__atomic_load_n(&pool->done_seq, __ATOMIC_ACQUIRE) == ds) {
        if (++spins < NN_POOL_SPIN) {
            cpu_relax();
            continue;
        }
        __atomic_store_n(&pool->caller_sleeping, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&pool->done_seq, __ATOMIC_SEQ_CST) == ds) futex_wait(&pool->done_seq, ds);
        __atomic_store_n(&pool->caller_sleeping, 0, __ATOMIC_SEQ_CST);
        spins = 0;
    }
}
