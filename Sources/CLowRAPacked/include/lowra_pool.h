// One persistent pool of worker threads for LowRA's own parallel loops. A decode step runs a few
// hundred small matrix-vector products; handing each to a thread that is already awake (spinning
// briefly between jobs, then sleeping) costs far less than waking threads per product.
#ifndef LOWRA_POOL_H
#define LOWRA_POOL_H

#include <stdint.h>

/// fn(ctx, task) runs once for every task in [0, tasks).
typedef void (*lowra_task_fn)(void *ctx, int64_t task);

/// Runs the tasks on the calling thread and the pool's workers and returns when all are done.
/// Called from inside a task, or while another thread's job runs, the tasks run on the caller.
void lowra_pool_run(int64_t tasks, lowra_task_fn fn, void *ctx);

/// Tells idle workers to sleep now rather than spin until the next job: called before handing the
/// cores to another pool of threads (OpenBLAS), so the two do not fight over them.
void lowra_pool_park(void);

/// Threads a job runs on, the caller included: LOWRA_THREADS if set, else the processors online.
int lowra_pool_threads(void);

#endif
