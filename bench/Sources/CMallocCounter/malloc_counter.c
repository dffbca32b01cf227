// Counts heap allocations by interposing the allocator entry points and forwarding to glibc's
// internal implementations. Linked only into authzbench, to report allocations per check.
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include "include/malloc_counter.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static uint64_t counter;

uint64_t malloc_counter_allocations(void) { return __atomic_load_n(&counter, __ATOMIC_RELAXED); }

void *malloc(size_t n) { __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED); return __libc_realloc(p, n); }
void free(void *p) { __libc_free(p); }
int posix_memalign(void **out, size_t align, size_t n) {
    __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    void *p = __libc_memalign(align, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
void *aligned_alloc(size_t align, size_t n) { __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED); return __libc_memalign(align, n); }
void *memalign(size_t align, size_t n) { __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED); return __libc_memalign(align, n); }
