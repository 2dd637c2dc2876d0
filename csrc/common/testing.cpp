#include "common/testing.h"

#include <atomic>
#include <mutex>

#include "common/errors.h"
#include "common/threads.h"
#include "common/work_pool.h"

namespace pangu::testing {

void fill_strided(const TensorView& t, double value) {
  check_cpu(t, "tensor");
  check_writable(t, "tensor");
  check_dtype(t, "tensor", {DType::F32, DType::F16, DType::BF16, DType::F64});
  int64_t n = t.numel();
  for (int64_t linear = 0; linear < n; ++linear) {
    int64_t offset = 0, rest = linear;
    for (int64_t d = t.dim() - 1; d >= 0; --d) {
      offset += (rest % t.size(d)) * t.strides[static_cast<size_t>(d)];
      rest /= t.size(d);
    }
    switch (t.dtype) {
      case DType::F32: t.ptr<float>()[offset] = static_cast<float>(value); break;
      case DType::F64: t.ptr<double>()[offset] = value; break;
      case DType::F16: t.ptr<uint16_t>()[offset] = f32_to_f16(static_cast<float>(value)); break;
      default: t.ptr<uint16_t>()[offset] = f32_to_bf16(static_cast<float>(value)); break;
    }
  }
}

std::vector<int> work_pool_counts(int64_t groups, int threads, int64_t fail_group) {
  PANGU_CHECK(groups >= 0, Value, "groups: expected >= 0, got ", groups);
  std::vector<std::atomic<int>> counts(static_cast<size_t>(groups));
  run_groups(groups, threads, [&](int64_t first, const ClaimGroup& claim) {
    for (int64_t g = first; g >= 0; g = claim()) {
      counts[static_cast<size_t>(g)].fetch_add(1);
      PANGU_CHECK(g != fail_group, Value, "group ", g, " failed");
    }
  });
  return std::vector<int>(counts.begin(), counts.end());
}

std::vector<std::pair<int64_t, int64_t>> parallel_for_ranges(int64_t n, int64_t grain, int64_t fail_index) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  std::mutex mutex;
  parallel_for(n, grain, [&](int64_t begin, int64_t end) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      ranges.emplace_back(begin, end);
    }
    PANGU_CHECK(fail_index < begin || fail_index >= end, Value, "index ", fail_index, " failed");
  });
  return ranges;
}

}  // namespace pangu::testing
