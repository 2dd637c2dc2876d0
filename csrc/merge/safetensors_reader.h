// Read side of the safetensors format: the file memory-mapped once, its JSON header handed out as
// text (parsed in Python), and tensor bytes handed out as zero-copy ranges of the mapping.
// The mapping is private copy-on-write, so callers may get writable arrays without ever changing
// the file. Ranges are released from this process's resident set after use (the page cache keeps
// them), which is what bounds a streaming merge's memory to the tensors in flight.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace pangu::merge {

// Opens `path` read-only and returns its descriptor, storing the file's size in `size`; throws
// ValueError naming the file if it cannot be opened or stat'ed. The caller closes the descriptor.
int open_for_reading(const std::string& path, int64_t& size);

class SafetensorsReader {
 public:
  // Maps `path`; throws ValueError naming the file if it cannot be opened or is not safetensors
  // (shorter than its 8-byte header length, or a header running past the end).
  explicit SafetensorsReader(const std::string& path);

  const std::string& path() const { return path_; }
  int64_t file_size() const { return size_; }
  // The JSON header text (without the padding spaces' meaning: JSON allows them).
  std::string header() const;
  // Offset of the first data byte: 8 + header length. Tensor offsets in the header count from here.
  int64_t data_start() const { return data_start_; }
  // Pointer to data bytes [begin, end) counted from data_start(); throws ValueError naming `name`
  // when the range lies outside the file. Valid while any copy of keeper() lives.
  char* range(int64_t begin, int64_t end, const std::string& name) const;
  // Holds the mapping alive (share it with every view handed out).
  std::shared_ptr<void> keeper() const { return mapping_; }
  // Hints that [begin, end) will be read soon (readahead). Never fails.
  void prefetch(int64_t begin, int64_t end) const;
  // Maps every page of [begin, end) into this process now, in one call (MADV_POPULATE_READ), instead
  // of one page fault per page while a kernel reads it. Falls back to prefetch() on kernels before
  // 5.14. Never fails.
  void populate(int64_t begin, int64_t end) const;
  // Drops the whole pages inside [begin, end) from this process (not from the page cache). Data read
  // later faults back in from the file; private pages written by a caller are discarded.
  void release(int64_t begin, int64_t end) const;

 private:
  std::string path_;
  int64_t size_ = 0;
  int64_t data_start_ = 0;
  std::shared_ptr<void> mapping_;
  char* base_ = nullptr;
};

}  // namespace pangu::merge
