// Zeroed anonymous memory for the KV and indexer caches, independent of Node: the binding wraps it in an external
// ArrayBuffer whose finalizer calls free_cache_memory.
//
// Why not a plain typed array: a sparse decode step gathers ~2K rows scattered over every layer's latent cache
// (160 MiB at 32K for the bench model), one 4 KiB page per row, so most rows cost a page walk besides their cache
// misses. Regions of 2 MiB or more are mapped 2 MiB-aligned and advised for transparent huge pages (Linux,
// MADV_HUGEPAGE; honoured when the system's THP mode is "always" or "madvise"), which takes the page walks away.
// The pages stay untouched (zero) until the cache writes them, so the advice applies from the first fault on.
// GLANCE_HUGE_PAGES=0 turns the advice off.
#pragma once

#include <cstddef>

namespace glance {

struct CacheMemory {
  void* data = nullptr;  // null on failure (the caller falls back to ordinary zeroed memory)
  size_t size = 0;       // bytes usable from data (the request)
  size_t mapped = 0;     // bytes mapped, for free_cache_memory
};

// bytes > 0. Never throws.
CacheMemory alloc_cache_memory(size_t bytes);

// Releases memory from alloc_cache_memory (no-op for data == nullptr).
void free_cache_memory(void* data, size_t mapped);

}  // namespace glance
