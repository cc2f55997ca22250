// The allocator's free memory handed back to the system between the layers of a large model.
#ifndef LOWRA_MEMORY_H
#define LOWRA_MEMORY_H

// glibc's malloc_trim(0): once a freed 32 MB block has raised glibc's mmap threshold, buffers below it come
// from the heap and per-thread arenas, whose free pages stay resident. A no-op on other C libraries.
void lowra_return_free_memory(void);

#endif
