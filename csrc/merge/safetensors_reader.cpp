#include "merge/safetensors_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/errors.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif

namespace pangu::merge {

namespace {
constexpr int64_t kMaxHeader = int64_t{100} << 20;  // the format's own limit is 100 MB

int64_t page_size() {
  static const int64_t size = sysconf(_SC_PAGESIZE);
  return size;
}
}  // namespace

int open_for_reading(const std::string& path, int64_t& size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  PANGU_CHECK(fd >= 0, Value, "path: cannot open ", path, ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail(ErrorKind::Value, "path: cannot stat ", path, ": ", std::strerror(err));
  }
  size = static_cast<int64_t>(st.st_size);
  return fd;
}

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  int fd = open_for_reading(path, size_);
  if (size_ < 8) {
    ::close(fd);
    fail(ErrorKind::Value, "path: ", path, " is not a safetensors file (", size_, " bytes, shorter than the header length)");
  }
  void* p = ::mmap(nullptr, static_cast<size_t>(size_), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);  // the mapping keeps the file open
  PANGU_CHECK(p != MAP_FAILED, Value, "path: cannot map ", path, ": ", std::strerror(err));
  int64_t bytes = size_;
  mapping_ = std::shared_ptr<void>(p, [bytes](void* q) { ::munmap(q, static_cast<size_t>(bytes)); });
  base_ = static_cast<char*>(p);
  uint64_t header_len = 0;
  std::memcpy(&header_len, base_, 8);  // little-endian u64, as on every platform we build for
  PANGU_CHECK(header_len <= static_cast<uint64_t>(kMaxHeader) && static_cast<int64_t>(header_len) <= size_ - 8, Value,
              "path: ", path, " is not a safetensors file (header length ", header_len, " past the end of a ",
              size_, "-byte file)");
  data_start_ = 8 + static_cast<int64_t>(header_len);
}

std::string SafetensorsReader::header() const {
  return std::string(base_ + 8, static_cast<size_t>(data_start_ - 8));
}

char* SafetensorsReader::range(int64_t begin, int64_t end, const std::string& name) const {
  PANGU_CHECK(begin >= 0 && begin <= end && end <= size_ - data_start_, Value, name, ": data offsets [", begin, ", ",
              end, ") lie outside the ", size_ - data_start_, " data bytes of ", path_);
  return base_ + data_start_ + begin;
}

void SafetensorsReader::prefetch(int64_t begin, int64_t end) const {
  int64_t first = (data_start_ + begin) / page_size() * page_size();
  int64_t last = data_start_ + end;
  if (last > first) ::madvise(base_ + first, static_cast<size_t>(last - first), MADV_WILLNEED);
}

void SafetensorsReader::populate(int64_t begin, int64_t end) const {
  int64_t first = (data_start_ + begin) / page_size() * page_size();
  int64_t last = data_start_ + end;
  if (last <= first) return;
  if (::madvise(base_ + first, static_cast<size_t>(last - first), MADV_POPULATE_READ) != 0) prefetch(begin, end);
}

void SafetensorsReader::release(int64_t begin, int64_t end) const {
  int64_t page = page_size();
  int64_t first = (data_start_ + begin + page - 1) / page * page;  // whole pages only: neighbours stay
  int64_t last = (data_start_ + end) / page * page;
  if (last > first) ::madvise(base_ + first, static_cast<size_t>(last - first), MADV_DONTNEED);
}

}  // namespace pangu::merge
