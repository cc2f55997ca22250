#include "lowra_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

// How long an idle worker spins on the job counter before sleeping: longer than the gaps between
// the products of one decode step, short against anything a user would notice on an idle machine.
#define SPIN_NANOSECONDS 200000

enum { MAX_THREADS = 256 };

static struct {
    int threads;                  // workers + the caller
    pthread_mutex_t run_lock;     // one job at a time
    pthread_mutex_t sleep_lock;   // with `wake`: idle workers sleep here
    pthread_cond_t wake;
    _Atomic uint64_t generation;  // bumped to publish a job
    _Atomic int sleepers;         // workers asleep (or about to be) on `wake`
    _Atomic int64_t next;         // the next task to take
    _Atomic int checked_in;       // workers done with the current job
    _Atomic int parked;           // set by lowra_pool_park: idle workers sleep now instead of spinning
    int64_t tasks;                // the current job, written before `generation` is bumped
    lowra_task_fn fn;
    void *ctx;
} pool = {.run_lock = PTHREAD_MUTEX_INITIALIZER, .sleep_lock = PTHREAD_MUTEX_INITIALIZER,
          .wake = PTHREAD_COND_INITIALIZER};

static _Thread_local int inside_job;  // nested calls run serially

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void take_tasks(void) {
    for (;;) {
        const int64_t i = atomic_fetch_add_explicit(&pool.next, 1, memory_order_relaxed);
        if (i >= pool.tasks) return;
        pool.fn(pool.ctx, i);
    }
}

static void *worker(void *unused) {
    (void)unused;
    inside_job = 1;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g;
        uint64_t spin_start = 0;
        unsigned spins = 0;
        while ((g = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen) {
            CPU_RELAX();
            if (++spins % 256) continue;
            if (spin_start == 0) spin_start = now_ns();
            if (now_ns() - spin_start < SPIN_NANOSECONDS && !atomic_load_explicit(&pool.parked, memory_order_relaxed))
                continue;
            // Sleep. The publisher bumps `generation` then reads `sleepers`; this thread counts
            // itself in `sleepers` then reads `generation` (both sequentially consistent), so at
            // least one of the two sees the other: no job is missed.
            pthread_mutex_lock(&pool.sleep_lock);
            atomic_fetch_add(&pool.sleepers, 1);
            while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.wake, &pool.sleep_lock);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.sleep_lock);
            spin_start = 0;
        }
        seen = g;
        take_tasks();
        // The caller waits for every worker to check in, so no worker still holds this job when
        // the next one is published.
        atomic_fetch_add_explicit(&pool.checked_in, 1, memory_order_release);
    }
    return NULL;
}

static void start(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    const char *env = getenv("LOWRA_THREADS");
    if (env && atoi(env) > 0) n = atoi(env);
    pool.threads = n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
    for (int i = 1; i < pool.threads; i++) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, worker, NULL) != 0) {
            pool.threads = i;  // run with the threads we have
            pthread_attr_destroy(&attr);
            break;
        }
        pthread_attr_destroy(&attr);
    }
}

static pthread_once_t started = PTHREAD_ONCE_INIT;

int lowra_pool_threads(void) {
    pthread_once(&started, start);
    return pool.threads;
}

void lowra_pool_run(int64_t tasks, lowra_task_fn fn, void *ctx) {
    if (tasks <= 0) return;
    const int threads = lowra_pool_threads();
    if (tasks == 1 || threads == 1 || inside_job || pthread_mutex_trylock(&pool.run_lock) != 0) {
        for (int64_t i = 0; i < tasks; i++) fn(ctx, i);
        return;
    }
    atomic_store_explicit(&pool.parked, 0, memory_order_relaxed);
    pool.tasks = tasks;
    pool.fn = fn;
    pool.ctx = ctx;
    atomic_store_explicit(&pool.next, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.checked_in, 0, memory_order_relaxed);
    atomic_fetch_add(&pool.generation, 1);  // publishes the fields above
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.sleep_lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.sleep_lock);
    }
    inside_job = 1;
    take_tasks();
    inside_job = 0;
    // Wait for the workers; yield now and then, so that on an oversubscribed machine a worker
    // that lost its core gets it back instead of this thread spinning out its time slice.
    for (unsigned spins = 1; atomic_load_explicit(&pool.checked_in, memory_order_acquire) < threads - 1; spins++) {
        if (spins % 1024) CPU_RELAX();
        else sched_yield();
    }
    pthread_mutex_unlock(&pool.run_lock);
}

void lowra_pool_park(void) {
    if (!atomic_load_explicit(&pool.parked, memory_order_relaxed))
        atomic_store_explicit(&pool.parked, 1, memory_order_relaxed);
}
