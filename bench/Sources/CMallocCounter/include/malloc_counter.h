#ifndef MALLOC_COUNTER_H
#define MALLOC_COUNTER_H
#include <stdint.h>

/// Number of malloc/calloc/realloc/posix_memalign/aligned_alloc calls made by this process
/// since it started (all threads). Linked only into the benchmark binary.
uint64_t malloc_counter_allocations(void);

#endif
