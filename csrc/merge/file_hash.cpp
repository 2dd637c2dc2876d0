#include "merge/file_hash.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/errors.h"
#include "merge/safetensors_reader.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14; older kernels answer EINVAL and pages fault in instead
#endif

namespace pangu::merge {

namespace {
constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ull;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);  // little-endian, as on every platform we build for
  return v;
}
inline uint32_t read32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t mix_round(uint64_t acc, uint64_t input) { return rotl(acc + input * kP2, 31) * kP1; }
inline uint64_t merge_round(uint64_t acc, uint64_t value) { return (acc ^ mix_round(0, value)) * kP1 + kP4; }

// Consumes whole 32-byte stripes; returns the bytes consumed.
size_t stripes(uint64_t* v, const unsigned char* p, size_t bytes) {
  size_t done = 0;
  uint64_t a = v[0], b = v[1], c = v[2], d = v[3];
  for (; done + 32 <= bytes; done += 32) {
    a = mix_round(a, read64(p + done));
    b = mix_round(b, read64(p + done + 8));
    c = mix_round(c, read64(p + done + 16));
    d = mix_round(d, read64(p + done + 24));
  }
  v[0] = a, v[1] = b, v[2] = c, v[3] = d;
  return done;
}
}  // namespace

Xxh64::Xxh64(uint64_t seed) : v_{seed + kP1 + kP2, seed + kP2, seed, seed - kP1} {}

void Xxh64::update(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  total_ += bytes;
  if (pending_bytes_ > 0) {
    size_t take = std::min(bytes, 32 - pending_bytes_);
    std::memcpy(pending_ + pending_bytes_, p, take);
    pending_bytes_ += take;
    p += take;
    bytes -= take;
    if (pending_bytes_ < 32) return;
    stripes(v_, pending_, 32);
    pending_bytes_ = 0;
  }
  size_t done = stripes(v_, p, bytes);
  std::memcpy(pending_, p + done, bytes - done);
  pending_bytes_ = bytes - done;
}

uint64_t Xxh64::digest() const {
  uint64_t h;
  if (total_ >= 32) {
    h = rotl(v_[0], 1) + rotl(v_[1], 7) + rotl(v_[2], 12) + rotl(v_[3], 18);
    for (uint64_t v : v_) h = merge_round(h, v);
  } else {
    h = v_[2] + kP5;  // v_[2] holds the seed until the first stripe
  }
  h += total_;
  const unsigned char* p = pending_;
  size_t left = pending_bytes_;
  for (; left >= 8; p += 8, left -= 8) h = rotl(h ^ mix_round(0, read64(p)), 27) * kP1 + kP4;
  if (left >= 4) {
    h = rotl(h ^ (static_cast<uint64_t>(read32(p)) * kP1), 23) * kP2 + kP3;
    p += 4;
    left -= 4;
  }
  for (; left > 0; ++p, --left) h = rotl(h ^ (*p * kP5), 11) * kP1;
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

uint64_t xxh64(const void* data, size_t bytes, uint64_t seed) {
  Xxh64 state(seed);
  state.update(data, bytes);
  return state.digest();
}

std::string file_xxh64(const std::string& path, int64_t window) {
  PANGU_CHECK(window > 0, Value, "window: expected > 0 bytes, got ", window);
  int64_t file_size = 0;
  int fd = open_for_reading(path, file_size);
  auto size = static_cast<size_t>(file_size);
  Xxh64 state;
  if (size > 0) {
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    ::close(fd);
    PANGU_CHECK(map != MAP_FAILED, Value, "path: cannot map ", path, ": ", std::strerror(err));
    auto* base = static_cast<unsigned char*>(map);
    ::madvise(base, size, MADV_SEQUENTIAL);
    long page = ::sysconf(_SC_PAGESIZE);
    size_t step = (static_cast<size_t>(window) + page - 1) / page * page;  // windows start page-aligned
    for (size_t at = 0; at < size; at += step) {
      size_t len = std::min(step, size - at);
      ::madvise(base + at, len, MADV_POPULATE_READ);  // one call maps the window instead of a fault per page
      state.update(base + at, len);
      ::madvise(base + at, len, MADV_DONTNEED);
    }
    ::munmap(map, size);
  } else {
    ::close(fd);
  }
  static const char* kHex = "0123456789abcdef";
  uint64_t h = state.digest();
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) out[static_cast<size_t>(i)] = kHex[h & 0xf];
  return out;
}

}  // namespace pangu::merge
