// Fast whole-file digests for the merge record: XXH64 (Yann Collet's published 64-bit hash, as
// `xxhsum -H1` / the xxhash packages compute it), streamed over a memory mapping a window at a time,
// so hashing a checkpoint neither copies its bytes nor keeps more than one window of it mapped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pangu::merge {

// Incremental XXH64 with seed 0..2^64-1. update() any number of times, then digest().
class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0);
  void update(const void* data, size_t bytes);
  uint64_t digest() const;

 private:
  uint64_t v_[4];
  uint64_t total_ = 0;
  unsigned char pending_[32];
  size_t pending_bytes_ = 0;
};

// XXH64 of a buffer (the one-shot form of Xxh64).
uint64_t xxh64(const void* data, size_t bytes, uint64_t seed = 0);

// The file's XXH64 (seed 0) as 16 lowercase hex digits, big-endian (the canonical form). Maps the
// file read-only and walks it in `window` bytes, dropping each window's pages once hashed. Throws
// ValueError naming the path when it cannot be opened or mapped. Thread-safe.
std::string file_xxh64(const std::string& path, int64_t window = int64_t{8} << 20);

}  // namespace pangu::merge
