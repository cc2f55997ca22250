#include "lowra_memory.h"

#include <pthread.h>
#include <stdlib.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

typedef struct {
    void *data;
    unsigned long long bytes;
} scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void free_scratch(void *p) {
    scratch *s = p;
    free(s->data);
    free(s);
}

static void make_key(void) { pthread_key_create(&scratch_key, free_scratch); }

void *lowra_thread_scratch(unsigned long long bytes) {
    pthread_once(&scratch_once, make_key);
    scratch *s = pthread_getspecific(scratch_key);
    if (!s) {
        if (!(s = calloc(1, sizeof *s))) return NULL;
        pthread_setspecific(scratch_key, s);
    }
    if (s->bytes < bytes) {
        free(s->data);
        const unsigned long long size = (bytes + 63) / 64 * 64;
        s->data = aligned_alloc(64, size);
        s->bytes = s->data ? size : 0;
    }
    return s->data;
}

void lowra_return_free_memory(void) {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}
