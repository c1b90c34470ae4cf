#include "cache_memory.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace glance {

namespace {

constexpr size_t kHugePage = size_t{2} << 20;

bool huge_pages_wanted() {
  const char* v = std::getenv("GLANCE_HUGE_PAGES");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

}  // namespace

CacheMemory alloc_cache_memory(size_t bytes) {
  CacheMemory m;
  if (bytes == 0) return m;
  const bool huge = bytes >= kHugePage && huge_pages_wanted();
  // A huge-page region is rounded up to whole 2 MiB pages and placed on a 2 MiB boundary: map one page more, then
  // give back the unaligned head and the tail.
  const size_t size = huge ? (bytes + kHugePage - 1) / kHugePage * kHugePage : bytes;
  const size_t span = huge ? size + kHugePage : size;
  void* p = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return m;
  char* base = static_cast<char*>(p);
  if (huge) {
    const uintptr_t at = reinterpret_cast<uintptr_t>(base);
    char* aligned = base + ((kHugePage - at % kHugePage) % kHugePage);
    if (aligned > base) munmap(base, static_cast<size_t>(aligned - base));
    const size_t tail = static_cast<size_t>(base + span - (aligned + size));
    if (tail > 0) munmap(aligned + size, tail);
    base = aligned;
#ifdef MADV_HUGEPAGE
    madvise(base, size, MADV_HUGEPAGE);  // advice only: without it the memory is the same, on 4 KiB pages
#endif
  }
  m.data = base;
  m.size = bytes;
  m.mapped = size;
  return m;
}

void free_cache_memory(void* data, size_t mapped) {
  if (data != nullptr) munmap(data, mapped);
}

}  // namespace glance
