// Flat layout of a state dict: where each tensor sits in one contiguous buffer (a version of the
// weight store, or the staging buffer a transport sends bucket by bucket), and the multi-threaded
// copies between the tensors and that buffer (optionally cast, e.g. fp32 master -> bf16 copy).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/tensor_view.h"

namespace pangu {

// Where each tensor of a state dict sits in one flat buffer. Tensors keep their order; a bucket
// is a run of consecutive tensors of at most bucket_bytes (a larger tensor gets a bucket of its
// own); every tensor and bucket starts at a 64-byte boundary. Immutable after construction, so
// safe to share between threads.
class FlatLayout {
 public:
  struct Entry {
    std::string name;
    DType dtype;      // dtype stored in the flat buffer
    int64_t numel;
    int64_t offset;   // bytes from the start of the flat buffer
    int64_t nbytes;
    int32_t bucket;
  };

  // names, dtypes and numels have one item per tensor (numel >= 0); bucket_bytes >= 1. Throws
  // ValueError naming the culprit otherwise. O(tensors).
  FlatLayout(std::vector<std::string> names, std::vector<DType> dtypes, std::vector<int64_t> numels,
             int64_t bucket_bytes);

  const std::vector<Entry>& entries() const { return entries_; }
  // Bytes of the whole flat buffer (a multiple of 64).
  int64_t total_bytes() const { return total_bytes_; }
  int64_t bucket_limit() const { return bucket_limit_; }
  int64_t num_buckets() const { return static_cast<int64_t>(bucket_offsets_.size()); }
  // Byte offset and size of bucket b in [0, num_buckets()); unchecked.
  int64_t bucket_offset(int64_t b) const { return bucket_offsets_[static_cast<size_t>(b)]; }
  int64_t bucket_bytes(int64_t b) const { return bucket_sizes_[static_cast<size_t>(b)]; }

 private:
  std::vector<Entry> entries_;
  std::vector<int64_t> bucket_offsets_, bucket_sizes_;
  int64_t total_bytes_ = 0;
  int64_t bucket_limit_ = 1;
};

// A layout in a self-contained byte string (dtypes, numels, names; the bucket limit is kept
// apart), so a reader in another process can rebuild it. O(tensors).
std::string encode_layout(const FlatLayout& layout);
// The reverse of encode_layout for `count` tensors read from `size` bytes at p. Throws PeerLost
// when the record is truncated (it lives in memory another process wrote).
FlatLayout decode_layout(const uint8_t* p, int64_t size, int64_t count, int64_t bucket_bytes);

// A state dict's tensors checked once against a layout, so that the check can run before any shared
// state is touched and the copies after it cannot fail on user input. Holds raw pointers into the
// layout and the tensors' memory: both must outlive it. Copies are thread-safe for distinct
// destinations.
class FlatTensors {
 public:
  // tensors[i] must be a contiguous CPU tensor with entries[i].numel elements, of the entry's dtype
  // or (both being float dtypes) another one to cast through; writable when `writable`. Errors name
  // the tensor. When `buckets` is non-empty only the tensors of those buckets take part
  // (IndexError for an index outside [0, num_buckets())).
  FlatTensors(const FlatLayout& layout, const std::vector<TensorView>& tensors, bool writable,
              const std::vector<int64_t>& buckets = {});

  // Copies every tensor to base + entry.offset (base holds the layout's total_bytes()), casting
  // to the stored dtype with round to nearest even. Split evenly by bytes over num_threads().
  void to_flat(uint8_t* base) const;
  // Copies base + entry.offset into every tensor in place, casting to the tensor's dtype.
  void from_flat(const uint8_t* base) const;

 private:
  struct Piece {
    const FlatLayout::Entry* entry;
    uint8_t* tensor;
    DType tensor_dtype;
  };
  void copy(uint8_t* flat, bool to_flat) const;

  std::vector<Piece> pieces_;
};

// Copies tensors (in layout order) into `base`, which must hold layout.total_bytes(); see
// FlatTensors for the checks and casts. When `buckets` is non-empty only the tensors of those
// buckets are copied (so a sender can overlap flattening with sending).
void flatten(const FlatLayout& layout, const std::vector<TensorView>& tensors, uint8_t* base,
             const std::vector<int64_t>& buckets = {});

// The reverse: writes base + entries[i].offset into tensors[i] in place (writable, contiguous,
// dtype equal to the stored one, or another float dtype to cast to). When `buckets` is non-empty
// only the tensors of those buckets are written. No allocation besides the work list.
void unflatten(const FlatLayout& layout, const uint8_t* base, const std::vector<TensorView>& tensors,
               const std::vector<int64_t>& buckets = {});

// Per bucket: true when the bytes of `a` and `b` (two flat buffers of this layout) differ.
// Parallel over buckets. O(total_bytes).
std::vector<bool> changed_buckets(const FlatLayout& layout, const uint8_t* a, const uint8_t* b);

}  // namespace pangu
