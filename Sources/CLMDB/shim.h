#include <lmdb.h>

/// Asks the CPU to start loading the cache line at `address` (no fault if it is not mapped;
/// the store uses it to walk an import's sorted puts: Swift has no prefetch of its own).
static inline void authz_prefetch(const void *address) { __builtin_prefetch(address, 0, 0); }
