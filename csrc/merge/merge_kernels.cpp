#include "merge/merge_kernels.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <mutex>
#include <string>

#include "common/convert.h"
#include "common/cpu_features.h"
#include "common/threads.h"
#include "merge/merge_block_impl.h"
#include "common/work_pool.h"

namespace pangu::merge {

static_assert(kBlock == block_impl::kBlockMax, "combine's stack scratch must hold one block");

namespace scalar {
const BlockKernels kBlockKernels{block_impl::combine, block_impl::subtract, block_impl::drop, block_impl::trim,
                                    block_impl::blend, block_impl::fused_mix};
}

const BlockKernels& block_kernels() {
#if PANGU_HAVE_X86
  Isa isa = active_isa();
  if (isa >= Isa::Avx512) return avx512::kBlockKernels;
  if (isa >= Isa::Avx2) return avx2::kBlockKernels;
#endif
  return scalar::kBlockKernels;
}

namespace {

constexpr int64_t kGrainBlocks = 16;  // at least 64K elements per thread task

using block_impl::mix64;

inline uint64_t dare_key(uint64_t seed, uint64_t tensor_id, uint64_t model) {
  return mix64(mix64(mix64(seed) ^ tensor_id) ^ model);
}

inline float uniform_from_key(uint64_t key, uint64_t index) {
  return static_cast<float>(static_cast<int32_t>(mix64(key ^ index) >> 40)) * (1.0f / 16777216.0f);
}

void check_float_input(const TensorView& t, const std::string& arg, int64_t numel) {
  check_cpu(t, arg.c_str());
  check_dtype(t, arg.c_str(), {DType::F32, DType::F16, DType::BF16});
  check_contiguous(t, arg.c_str());
  PANGU_CHECK(t.numel() == numel, Value, arg, ": expected ", numel, " elements like out, got ", t.numel(),
              " with shape ", t.shape_str());
}

void check_output(const TensorView& out) {
  check_cpu(out, "out");
  check_dtype(out, "out", {DType::F32, DType::F16, DType::BF16});
  check_contiguous(out, "out");
  check_writable(out, "out");
}

void check_no_alias(const TensorView& out, const TensorView& in, const std::string& arg) {
  const char* o = static_cast<const char*>(out.data);
  const char* i = static_cast<const char*>(in.data);
  bool overlap = out.nbytes() > 0 && in.nbytes() > 0 && o < i + in.nbytes() && i < o + out.nbytes();
  PANGU_CHECK(!overlap, Value, "out: expected memory separate from ", arg, ", got overlapping buffers");
}

inline const char* element_ptr(const TensorView& t, int64_t index) {
  return static_cast<const char*>(t.data) + index * dtype_size(t.dtype);
}

// Runs fn(first_block, last_block) over groups of kGrainBlocks blocks on num_threads() threads of the
// work pool (common/work_pool.h): groups go to whichever thread asks next, so a thread slowed down by
// another process simply takes fewer, and none is waited for unless it holds a group. Each block's result
// depends only on its own elements, so the bits do not change with the thread count or timing.
template <typename Fn>
void for_each_block_group(int64_t blocks, Fn&& fn) {
  int64_t groups = (blocks + kGrainBlocks - 1) / kGrainBlocks;
  run_groups(groups, num_threads(), [&](int64_t first, const ClaimGroup& claim) {
    for (int64_t g = first; g >= 0; g = claim()) fn(g * kGrainBlocks, std::min(blocks, (g + 1) * kGrainBlocks));
  });
}

// Calls fn(state, block, delta, len) for every block of |model - base| in parallel; each thread
// of the pool owns its scratch and its state = init(). fn must only touch that state or per-block
// data. finish(state) runs once per thread after its blocks (e.g. to fold a local histogram in).
template <typename Init, typename Fn, typename Finish>
void for_each_delta_block(const TensorView* base, const TensorView& model, Init&& init, Fn&& fn,
                          Finish&& finish) {
  int64_t n = model.numel();
  int64_t blocks = (n + kBlock - 1) / kBlock;
  int64_t groups = (blocks + kGrainBlocks - 1) / kGrainBlocks;
  const BlockKernels& kernels = block_kernels();
  run_groups(groups, num_threads(), [&](int64_t first_group, const ClaimGroup& claim) {
    std::vector<float> fb(base ? kBlock : 0), delta(kBlock);
    auto state = init();
    for (int64_t g = first_group; g >= 0; g = claim()) {
      for (int64_t b = g * kGrainBlocks; b < std::min(blocks, (g + 1) * kGrainBlocks); ++b) {
        int64_t start = b * kBlock, len = std::min(kBlock, n - start);
        load_as_f32(element_ptr(model, start), model.dtype, delta.data(), static_cast<size_t>(len));
        if (base) {
          load_as_f32(element_ptr(*base, start), base->dtype, fb.data(), static_cast<size_t>(len));
          kernels.subtract(delta.data(), fb.data(), len, delta.data());
        }
        fn(state, b, delta.data(), len);
      }
    }
    finish(state);
  });
}

inline uint32_t magnitude_bits(float d) { return float_bits(d) & 0x7fffffffu; }

// Finds, in a 65536-bin histogram, the bin holding the k-th largest entry counting from the top,
// given `above` entries known to be larger than every bin. Returns (bin, entries above the bin).
std::pair<uint32_t, int64_t> select_bin(const std::vector<int64_t>& hist, int64_t k, int64_t above) {
  int64_t cumulative = above;
  for (int64_t bin = 65535; bin >= 0; --bin) {
    int64_t count = hist[static_cast<size_t>(bin)];
    if (cumulative + count >= k) return {static_cast<uint32_t>(bin), cumulative};
    cumulative += count;
  }
  PANGU_ASSERT(false);
  return {0, 0};
}

// Per-model plan for the magnitude trim: keep bits > threshold, and equal ones while their rank among
// equals (in index order) is below `ties_kept`.
struct TrimPlan {
  bool keep_all = false;
  bool keep_none = false;
  uint32_t threshold = 0;
  int64_t ties_kept = 0;
  bool all_ties = true;
  std::vector<int64_t> ties_before;  // per block: equal entries in earlier blocks (then the total)
};

TrimPlan plan_trim(const TensorView* base, const TensorView& model, double density) {
  TrimPlan plan;
  int64_t n = model.numel();
  int64_t k = static_cast<int64_t>(std::floor(density * static_cast<double>(n)));
  if (k >= n) {
    plan.keep_all = true;
    return plan;
  }
  if (k <= 0) {
    plan.keep_none = true;
    return plan;
  }
  MagnitudeThreshold t = kth_magnitude(base, model, k);
  plan.threshold = float_bits(t.value);
  plan.ties_kept = k - t.greater;
  plan.all_ties = plan.ties_kept >= t.equal;
  if (!plan.all_ties) {
    int64_t blocks = (n + kBlock - 1) / kBlock;
    plan.ties_before.assign(static_cast<size_t>(blocks) + 1, 0);
    uint32_t threshold = plan.threshold;
    for_each_delta_block(base, model, [] { return 0; }, [&](int&, int64_t b, const float* d, int64_t len) {
      int64_t equal = 0;
      for (int64_t j = 0; j < len; ++j) equal += magnitude_bits(d[j]) == threshold;
      plan.ties_before[static_cast<size_t>(b)] = equal;
    }, [](int&) {});
    int64_t running = 0;
    for (auto& count : plan.ties_before) {
      int64_t here = count;
      count = running;
      running += here;
    }
  }
  return plan;
}

void apply_trim(const TrimPlan& plan, int64_t block, float* d, int64_t len, const BlockKernels& kernels) {
  if (plan.keep_all) return;
  if (plan.keep_none) {
    std::fill(d, d + len, 0.0f);
    return;
  }
  if (plan.all_ties) {
    kernels.trim(d, len, plan.threshold, true);
    return;
  }
  // Only the first ties_kept entries equal to the threshold (in index order) survive. A block whose
  // equal entries are all before (or all past) that rank is one vector trim; only the block holding
  // the cut notes its kept entries, trims strictly, then puts them back.
  int64_t rank = plan.ties_before[static_cast<size_t>(block)];
  if (plan.ties_before[static_cast<size_t>(block) + 1] <= plan.ties_kept) {
    kernels.trim(d, len, plan.threshold, true);
    return;
  }
  if (rank >= plan.ties_kept) {
    kernels.trim(d, len, plan.threshold, false);
    return;
  }
  std::vector<std::pair<int64_t, float>> kept;
  for (int64_t j = 0; j < len && rank < plan.ties_kept; ++j) {
    if (magnitude_bits(d[j]) == plan.threshold) {
      kept.emplace_back(j, d[j]);
      ++rank;
    }
  }
  kernels.trim(d, len, plan.threshold, false);
  for (const auto& [j, value] : kept) d[j] = value;
}

// The fused one-pass path applies: no sparsify or election, 1 to 4 models, every input float32 or
// every input bfloat16 (base included), out float32 or bfloat16.
bool fusable(const TensorView* base, const std::vector<TensorView>& models, const TaskVectorOptions& options,
             const TensorView& out) {
  if (options.sparsify != Sparsify::None || options.sign_consensus) return false;
  if (models.size() > 4 || (out.dtype != DType::F32 && out.dtype != DType::BF16)) return false;
  DType in = models[0].dtype;
  if (in != DType::F32 && in != DType::BF16) return false;
  for (const auto& m : models) {
    if (m.dtype != in) return false;
  }
  return base == nullptr || base->dtype == in;
}

}  // namespace

float dare_uniform(uint64_t seed, uint64_t tensor_id, uint64_t model, uint64_t index) {
  return uniform_from_key(dare_key(seed, tensor_id, model), index);
}

MagnitudeThreshold kth_magnitude(const TensorView* base, const TensorView& model, int64_t k) {
  int64_t n = model.numel();
  PANGU_CHECK(k >= 1 && k <= n, Value, "k: expected 1 <= k <= ", n, ", got ", k);
  std::mutex lock;
  auto new_hist = [] { return std::vector<int64_t>(65536, 0); };
  auto fold_into = [&](std::vector<int64_t>& total) {
    return [&](std::vector<int64_t>& local) {
      std::lock_guard<std::mutex> guard(lock);
      for (size_t i = 0; i < total.size(); ++i) total[i] += local[i];
    };
  };
  // Pass 1: the top 16 bits of |d| (sign cleared, so bit order is magnitude order).
  std::vector<int64_t> high(65536, 0);
  for_each_delta_block(
      base, model, new_hist,
      [](std::vector<int64_t>& hist, int64_t, const float* d, int64_t len) {
        for (int64_t j = 0; j < len; ++j) ++hist[magnitude_bits(d[j]) >> 16];
      },
      fold_into(high));
  auto [high_bin, above_high] = select_bin(high, k, 0);
  // Pass 2: the low 16 bits of the entries in the chosen bin.
  std::vector<int64_t> low(65536, 0);
  for_each_delta_block(
      base, model, new_hist,
      [high_bin = high_bin](std::vector<int64_t>& hist, int64_t, const float* d, int64_t len) {
        // Gathers the bin's entries without branches first: whether an entry falls in the bin is
        // close to a coin flip when the bin is large, and a branch on it is mispredicted.
        uint16_t picked[kBlock];
        int64_t m = 0;
        for (int64_t j = 0; j < len; ++j) {
          uint32_t bits = magnitude_bits(d[j]);
          picked[m] = static_cast<uint16_t>(bits & 0xffffu);
          m += (bits >> 16) == high_bin;
        }
        for (int64_t j = 0; j < m; ++j) ++hist[picked[j]];
      },
      fold_into(low));
  auto [low_bin, above] = select_bin(low, k, above_high);
  MagnitudeThreshold result;
  result.value = bits_float((high_bin << 16) | low_bin);
  result.greater = above;
  result.equal = low[low_bin];
  return result;
}

int64_t merge_task_vectors(const TensorView* base, const std::vector<TensorView>& models,
                           const TaskVectorOptions& options, const TensorView& out) {
  check_output(out);
  int64_t n = out.numel();
  int count = static_cast<int>(models.size());
  PANGU_CHECK(count >= 1, Value, "models: expected at least one tensor, got none");
  PANGU_CHECK(options.weights.size() == models.size(), Value, "weights: expected ", count, " values (one per model), got ",
              options.weights.size());
  bool sparse = options.sparsify != Sparsify::None;
  if (sparse) {
    PANGU_CHECK(options.densities.size() == models.size(), Value, "densities: expected ", count,
                " values (one per model), got ", options.densities.size());
    for (size_t i = 0; i < options.densities.size(); ++i) {
      double d = options.densities[i];
      PANGU_CHECK(d >= 0.0 && d <= 1.0, Value, "densities[", i, "]: expected a value in [0, 1], got ", d);
    }
  }
  PANGU_CHECK(std::isfinite(options.lambda), Value, "lambda: expected a finite number, got ", options.lambda);
  if (base) {
    check_float_input(*base, "base", n);
    check_no_alias(out, *base, "base");
  }
  for (int i = 0; i < count; ++i) {
    std::string arg = "models[" + std::to_string(i) + "]";
    check_float_input(models[static_cast<size_t>(i)], arg, n);
    check_no_alias(out, models[static_cast<size_t>(i)], arg);
  }
  if (n == 0) return 0;

  std::vector<TrimPlan> trims;
  if (options.sparsify == Sparsify::Magnitude) {
    for (int i = 0; i < count; ++i) trims.push_back(plan_trim(base, models[static_cast<size_t>(i)], options.densities[i]));
  }
  std::vector<uint64_t> keys;
  if (options.sparsify == Sparsify::Random) {
    for (int i = 0; i < count; ++i) keys.push_back(dare_key(options.seed, options.tensor_id, static_cast<uint64_t>(i)));
  }

  const BlockKernels& kernels = block_kernels();
  int64_t blocks = (n + kBlock - 1) / kBlock;
  std::atomic<int64_t> nonfinite{0};
  char* out_bytes = static_cast<char*>(out.data);
  int64_t out_size = dtype_size(out.dtype);
  if (fusable(base, models, options, out)) {
    float weights[4];
    float divisor = 0.0f;
    for (int i = 0; i < count; ++i) {
      weights[i] = static_cast<float>(options.weights[static_cast<size_t>(i)]);
      divisor += weights[i];
    }
    float lambda = static_cast<float>(options.lambda);
    float scale = lambda;
    if (options.normalize) scale = std::fabs(divisor) < 1e-8f ? lambda : lambda / divisor;
    bool in_bf16 = models[0].dtype == DType::BF16, out_bf16 = out.dtype == DType::BF16;
    for_each_block_group(blocks, [&](int64_t first, int64_t last) {
      int64_t bad = 0;
      const void* pointers[4];
      for (int64_t b = first; b < last; ++b) {
        int64_t start = b * kBlock, len = std::min(kBlock, n - start);
        for (int i = 0; i < count; ++i) pointers[i] = element_ptr(models[static_cast<size_t>(i)], start);
        const void* base_ptr = base ? element_ptr(*base, start) : nullptr;
        bad += kernels.fused_mix(base_ptr, pointers, count, in_bf16, out_bf16, weights, scale, len,
                                 out_bytes + start * out_size);
      }
      nonfinite += bad;
    });
    return nonfinite.load();
  }
  for_each_block_group(blocks, [&](int64_t first, int64_t last) {
    thread_local std::vector<float> fb, fo, storage;  // scratch reused across calls and groups
    fb.resize(base ? kBlock : 0);
    fo.resize(kBlock);
    storage.resize(static_cast<size_t>(count * kBlock));
    std::vector<float*> deltas(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) deltas[static_cast<size_t>(i)] = storage.data() + i * kBlock;
    int64_t bad = 0;
    for (int64_t b = first; b < last; ++b) {
      int64_t start = b * kBlock, len = std::min(kBlock, n - start);
      const float* base_block = nullptr;
      if (base) {
        load_as_f32(element_ptr(*base, start), base->dtype, fb.data(), static_cast<size_t>(len));
        base_block = fb.data();
      }
      for (int i = 0; i < count; ++i) {
        const TensorView& m = models[static_cast<size_t>(i)];
        float* d = deltas[static_cast<size_t>(i)];
        // Converted straight into the delta buffer; the base is taken off in place.
        load_as_f32(element_ptr(m, start), m.dtype, d, static_cast<size_t>(len));
        if (base_block) kernels.subtract(d, base_block, len, d);
        if (options.sparsify == Sparsify::Magnitude) {
          apply_trim(trims[static_cast<size_t>(i)], b, d, len, kernels);
        } else if (options.sparsify == Sparsify::Random) {
          float density = static_cast<float>(options.densities[static_cast<size_t>(i)]);
          if (density <= 0.0f) {
            std::fill(d, d + len, 0.0f);
          } else if (density < 1.0f) {
            kernels.drop(d, len, keys[static_cast<size_t>(i)], options.first_index + static_cast<uint64_t>(start),
                         density);
          }
        }
      }
      bad += kernels.combine(base_block, deltas.data(), options.weights.data(), count, len, options.sign_consensus,
                             options.normalize, static_cast<float>(options.lambda), fo.data());
      store_from_f32(fo.data(), out_bytes + start * out_size, out.dtype, static_cast<size_t>(len));
    }
    nonfinite += bad;
  });
  return nonfinite.load();
}

int64_t slerp(const TensorView& a, const TensorView& b, double t, double dot_threshold, double eps,
              const TensorView& out) {
  check_output(out);
  int64_t n = out.numel();
  check_float_input(a, "a", n);
  check_float_input(b, "b", n);
  check_no_alias(out, a, "a");
  check_no_alias(out, b, "b");
  PANGU_CHECK(t >= 0.0 && t <= 1.0, Value, "t: expected a value in [0, 1], got ", t);
  PANGU_CHECK(dot_threshold > 0.0 && dot_threshold <= 1.0, Value, "dot_threshold: expected a value in (0, 1], got ",
              dot_threshold);
  if (n == 0) return 0;
  int64_t blocks = (n + kBlock - 1) / kBlock;
  // Sums per block, added in block order afterwards: the same bits for any thread count.
  std::vector<std::array<double, 3>> partial(static_cast<size_t>(blocks));
  for_each_block_group(blocks, [&](int64_t first, int64_t last) {
    std::vector<float> fa(kBlock), fb(kBlock);
    for (int64_t blk = first; blk < last; ++blk) {
      int64_t start = blk * kBlock, len = std::min(kBlock, n - start);
      load_as_f32(element_ptr(a, start), a.dtype, fa.data(), static_cast<size_t>(len));
      load_as_f32(element_ptr(b, start), b.dtype, fb.data(), static_cast<size_t>(len));
      double dot = 0.0, na = 0.0, nb = 0.0;
      for (int64_t j = 0; j < len; ++j) {
        double x = fa[static_cast<size_t>(j)], y = fb[static_cast<size_t>(j)];
        dot += x * y;
        na += x * x;
        nb += y * y;
      }
      partial[static_cast<size_t>(blk)] = {dot, na, nb};
    }
  });
  double dot = 0.0, na = 0.0, nb = 0.0;
  for (const auto& p : partial) {
    dot += p[0];
    na += p[1];
    nb += p[2];
  }
  double norm_a = std::sqrt(na), norm_b = std::sqrt(nb);
  double cosine = dot / ((norm_a > eps ? norm_a : 1.0) * (norm_b > eps ? norm_b : 1.0));
  double ca, cb;
  if (std::fabs(cosine) > dot_threshold) {
    ca = 1.0 - t;
    cb = t;
  } else {
    double theta = std::acos(std::max(-1.0, std::min(1.0, cosine)));
    double sin_theta = std::sin(theta);
    ca = std::sin(theta - theta * t) / sin_theta;
    cb = std::sin(theta * t) / sin_theta;
  }
  const BlockKernels& kernels = block_kernels();
  std::mutex lock;
  int64_t nonfinite = 0;
  char* out_bytes = static_cast<char*>(out.data);
  int64_t out_size = dtype_size(out.dtype);
  for_each_block_group(blocks, [&](int64_t first, int64_t last) {
    std::vector<float> fa(kBlock), fb(kBlock), fo(kBlock);
    int64_t bad = 0;
    for (int64_t blk = first; blk < last; ++blk) {
      int64_t start = blk * kBlock, len = std::min(kBlock, n - start);
      load_as_f32(element_ptr(a, start), a.dtype, fa.data(), static_cast<size_t>(len));
      load_as_f32(element_ptr(b, start), b.dtype, fb.data(), static_cast<size_t>(len));
      bad += kernels.blend(fa.data(), fb.data(), static_cast<float>(ca), static_cast<float>(cb), len, fo.data());
      store_from_f32(fo.data(), out_bytes + start * out_size, out.dtype, static_cast<size_t>(len));
    }
    std::lock_guard<std::mutex> guard(lock);
    nonfinite += bad;
  });
  return nonfinite;
}

}  // namespace pangu::merge
