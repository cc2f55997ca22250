// The allocator's free memory handed back to the system between the layers of a large model.
#ifndef LOWRA_MEMORY_H
#define LOWRA_MEMORY_H

// glibc's malloc_trim(0): once a freed 32 MB block has raised glibc's mmap threshold, buffers below it come
// from the heap and per-thread arenas, whose free pages stay resident. A no-op on other C libraries.
void lowra_return_free_memory(void);

// A 64-byte-aligned buffer of at least `bytes` for the calling thread, kept and reused by its next
// call (grown when asked for more, freed when the thread exits); NULL when out of memory. For the
// kernels' per-call scratch (quantized activations), which would otherwise be fresh pages, faulted in
// and zeroed by the kernel, on every product of a long prompt. Not re-entrant: one user per thread
// at a time.
void *lowra_thread_scratch(unsigned long long bytes);

#endif
