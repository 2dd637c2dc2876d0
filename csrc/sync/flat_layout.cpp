#include "sync/flat_layout.h"

#include <algorithm>
#include <cstring>

#include "common/convert.h"
#include "common/threads.h"

namespace pangu {

namespace {
constexpr int64_t kAlign = 64;
constexpr int64_t kPage = 4096;

int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

bool is_float(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }
}  // namespace

FlatLayout::FlatLayout(std::vector<std::string> names, std::vector<DType> dtypes, std::vector<int64_t> numels,
                       int64_t bucket_bytes) {
  PANGU_CHECK(names.size() == dtypes.size() && names.size() == numels.size(), Value,
              "layout: expected as many names, dtypes and numels, got ", names.size(), ", ", dtypes.size(), ", ",
              numels.size());
  PANGU_CHECK(bucket_bytes >= 1, Value, "bucket_bytes: expected >= 1, got ", bucket_bytes);
  bucket_limit_ = bucket_bytes;
  int64_t offset = 0, bucket_start = 0;
  int32_t bucket = -1;
  for (size_t i = 0; i < names.size(); ++i) {
    PANGU_CHECK(numels[i] >= 0, Value, names[i], ": expected numel >= 0, got ", numels[i]);
    int64_t nbytes = numels[i] * dtype_size(dtypes[i]);
    offset = round_up(offset, kAlign);
    if (bucket < 0 || (offset > bucket_start && offset + nbytes - bucket_start > bucket_bytes)) {
      if (bucket >= 0) bucket_sizes_.push_back(offset - bucket_start);
      ++bucket;
      bucket_start = offset;
      bucket_offsets_.push_back(offset);
    }
    entries_.push_back({std::move(names[i]), dtypes[i], numels[i], offset, nbytes, bucket});
    offset += nbytes;
  }
  total_bytes_ = round_up(offset, kAlign);
  if (bucket >= 0) bucket_sizes_.push_back(total_bytes_ - bucket_start);
}

// Record per tensor: uint8 dtype, int64 numel, uint32 name length, then the name.
std::string encode_layout(const FlatLayout& layout) {
  std::string blob;
  for (const auto& e : layout.entries()) {
    blob.push_back(static_cast<char>(e.dtype));
    blob.append(reinterpret_cast<const char*>(&e.numel), 8);
    uint32_t len = static_cast<uint32_t>(e.name.size());
    blob.append(reinterpret_cast<const char*>(&len), 4);
    blob.append(e.name);
  }
  return blob;
}

FlatLayout decode_layout(const uint8_t* p, int64_t size, int64_t count, int64_t bucket_bytes) {
  std::vector<std::string> names;
  std::vector<DType> dtypes;
  std::vector<int64_t> numels;
  const uint8_t* end = p + size;
  for (int64_t i = 0; i < count; ++i) {
    PANGU_CHECK(p + 13 <= end, PeerLost, "shared weight store: layout record truncated");
    dtypes.push_back(static_cast<DType>(p[0]));
    int64_t numel;
    std::memcpy(&numel, p + 1, 8);
    uint32_t len;
    std::memcpy(&len, p + 9, 4);
    p += 13;
    PANGU_CHECK(p + len <= end, PeerLost, "shared weight store: layout record truncated");
    names.emplace_back(reinterpret_cast<const char*>(p), len);
    numels.push_back(numel);
    p += len;
  }
  return FlatLayout(std::move(names), std::move(dtypes), std::move(numels), bucket_bytes);
}

FlatTensors::FlatTensors(const FlatLayout& layout, const std::vector<TensorView>& tensors, bool writable,
                         const std::vector<int64_t>& buckets) {
  const auto& entries = layout.entries();
  PANGU_CHECK(tensors.size() == entries.size(), Value, "tensors: expected ", entries.size(),
              " tensors (one per layout entry), got ", tensors.size());
  std::vector<char> wanted;
  if (!buckets.empty()) {
    wanted.assign(static_cast<size_t>(layout.num_buckets()), 0);
    for (int64_t b : buckets) {
      PANGU_CHECK(b >= 0 && b < layout.num_buckets(), Index, "buckets: expected indices in [0, ",
                  layout.num_buckets(), "), got ", b);
      wanted[static_cast<size_t>(b)] = 1;
    }
  }
  pieces_.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    const TensorView& t = tensors[i];
    const char* name = e.name.c_str();
    check_cpu(t, name);
    check_contiguous(t, name);
    if (writable) check_writable(t, name);
    PANGU_CHECK(t.numel() == e.numel, Value, name, ": expected ", e.numel, " elements, got ", t.numel(),
                " with shape ", t.shape_str());
    PANGU_CHECK(t.dtype == e.dtype || (is_float(t.dtype) && is_float(e.dtype)), Type, name, ": expected ",
                dtype_name(e.dtype), " (or another float dtype to cast), got ", dtype_name(t.dtype));
    if (e.nbytes == 0 || (!wanted.empty() && !wanted[static_cast<size_t>(e.bucket)])) continue;
    pieces_.push_back({&e, static_cast<uint8_t*>(t.data), t.dtype});
  }
}

void FlatTensors::to_flat(uint8_t* base) const { copy(base, true); }

void FlatTensors::from_flat(const uint8_t* base) const { copy(const_cast<uint8_t*>(base), false); }

// Split evenly by bytes over the threads so that one huge tensor and many tiny ones both use every
// core. The split runs over the pieces' own bytes (each padded to 64), not over the flat buffer, so
// copying one small bucket of a large layout stays on the calling thread.
void FlatTensors::copy(uint8_t* flat, bool to_flat) const {
  if (pieces_.empty()) return;
  std::vector<int64_t> starts(pieces_.size());
  int64_t work = 0;
  for (size_t i = 0; i < pieces_.size(); ++i) {
    starts[i] = work;
    work += round_up(pieces_[i].entry->nbytes, kAlign);
  }
  int64_t units = (work + kPage - 1) / kPage;
  // At least 8 MiB per range: smaller copies (a bucket prepared while others travel) do not wake
  // helper threads that would compete with the transport for the cores.
  parallel_for(units, 2048, [&](int64_t ub, int64_t ue) {
    int64_t lo = ub * kPage, hi = std::min(ue * kPage, work);
    size_t i = static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), lo) - starts.begin());
    if (i > 0) --i;
    for (; i < pieces_.size() && starts[i] < hi; ++i) {
      const FlatLayout::Entry& e = *pieces_[i].entry;
      // Local byte range of this piece; multiples of 64 or the piece's end, so whole elements.
      int64_t a = std::max<int64_t>(lo - starts[i], 0), b = std::min<int64_t>(hi - starts[i], e.nbytes);
      if (a >= b) continue;
      int64_t flat_size = dtype_size(e.dtype), tensor_size = dtype_size(pieces_[i].tensor_dtype);
      int64_t first = a / flat_size, count = (b - a) / flat_size;
      uint8_t* f = flat + e.offset + a;
      uint8_t* t = pieces_[i].tensor + first * tensor_size;
      if (pieces_[i].tensor_dtype == e.dtype) {
        if (to_flat) std::memcpy(f, t, static_cast<size_t>(b - a));
        else std::memcpy(t, f, static_cast<size_t>(b - a));
      } else if (to_flat) {
        convert_floats(t, pieces_[i].tensor_dtype, f, e.dtype, static_cast<size_t>(count));
      } else {
        convert_floats(f, e.dtype, t, pieces_[i].tensor_dtype, static_cast<size_t>(count));
      }
    }
  });
}

void flatten(const FlatLayout& layout, const std::vector<TensorView>& tensors, uint8_t* base,
             const std::vector<int64_t>& buckets) {
  FlatTensors(layout, tensors, false, buckets).to_flat(base);
}

void unflatten(const FlatLayout& layout, const uint8_t* base, const std::vector<TensorView>& tensors,
               const std::vector<int64_t>& buckets) {
  FlatTensors(layout, tensors, true, buckets).from_flat(base);
}

std::vector<bool> changed_buckets(const FlatLayout& layout, const uint8_t* a, const uint8_t* b) {
  int64_t n = layout.num_buckets();
  std::vector<char> changed(static_cast<size_t>(n), 0);
  parallel_for(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t off = layout.bucket_offset(i);
      changed[static_cast<size_t>(i)] =
          std::memcmp(a + off, b + off, static_cast<size_t>(layout.bucket_bytes(i))) != 0;
    }
  });
  return std::vector<bool>(changed.begin(), changed.end());
}

}  // namespace pangu
