#include "mapped_file.h"

#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace glance {

MappedFile map_file(const std::string& path) {
  MappedFile m;
  // O_NONBLOCK: opening a FIFO must not hang; it is rejected below as not a regular file.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    m.error = errno;
    m.what = "open";
    return m;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    m.error = errno;
    m.what = "fstat";
    ::close(fd);
    return m;
  }
  if (S_ISDIR(st.st_mode)) {
    m.error = EISDIR;
    m.what = "open";
    ::close(fd);
    return m;
  }
  if (!S_ISREG(st.st_mode)) {
    m.error = ENODEV;
    m.what = "not a regular file";
    ::close(fd);
    return m;
  }
  if (st.st_size == 0) {
    ::close(fd);
    return m;
  }
  void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping keeps the file referenced
  if (p == MAP_FAILED) {
    m.error = err;
    m.what = "mmap";
    return m;
  }
  m.data = p;
  m.size = static_cast<size_t>(st.st_size);
  return m;
}

void unmap_file(void* data, size_t size) {
  if (data != nullptr && size > 0) ::munmap(data, size);
}

const char* errno_name(int err) {
  switch (err) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EISDIR: return "EISDIR";
    case ENOTDIR: return "ENOTDIR";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ELOOP: return "ELOOP";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOMEM: return "ENOMEM";
    case ENODEV: return "ENODEV";
    case EPERM: return "EPERM";
    case EINVAL: return "EINVAL";
    case EOVERFLOW: return "EOVERFLOW";
    default: return "";
  }
}

}  // namespace glance
