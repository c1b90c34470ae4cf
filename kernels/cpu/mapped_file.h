// Read-only file mappings (POSIX mmap), independent of Node: the binding wraps the result in an external
// ArrayBuffer whose finalizer calls unmap_file.
#pragma once

#include <cstddef>
#include <string>

namespace glance {

struct MappedFile {
  void* data = nullptr;  // null for an empty file (size 0) and on failure
  size_t size = 0;
  int error = 0;            // errno of the failing call, 0 on success
  const char* what = "";    // the failing step: "open", "fstat", "mmap", or "not a regular file"
};

// mmap(PROT_READ, MAP_PRIVATE) of the whole file at path. Directories fail with EISDIR; other non-regular
// files (FIFOs, devices) fail with ENODEV. An empty file succeeds with data == nullptr, size == 0.
MappedFile map_file(const std::string& path);

// Releases a mapping made by map_file (no-op for data == nullptr).
void unmap_file(void* data, size_t size);

// "ENOENT", "EACCES", ... for the common errno values, "" otherwise.
const char* errno_name(int err);

}  // namespace glance
