// Checkpoint merge kernels: one tensor at a time, float32 accumulation, float32/float16/bfloat16 in
// and out (each input may have its own dtype), multi-threaded on the work pool (common/work_pool.h),
// vectorised with runtime ISA dispatch. Results are identical for every thread count and ISA path:
// work is cut into fixed blocks of kBlock elements and every reduction is summed block by block in a
// fixed order.
//
// All methods share one formula over task vectors d_i = theta_i - base (base = 0 when absent):
//     d_i'   = sparsify_i(d_i)                       (none, top-k magnitude, or random drop)
//     v_i    = w_i * d_i'
//     mask_i = 1, or [sign(v_i) == elected] with elected = +1 if sum_i v_i >= 0 else -1
//     mixed  = sum_i mask_i v_i  (/ sum_i mask_i w_i when normalize, a divisor below 1e-8 counts as 1)
//     out    = base + lambda * mixed
// linear = no base, no sparsify, no mask; task_arithmetic = base, no sparsify; ties = magnitude +
// sign mask; dare_linear = random + no mask; dare_ties = random + sign mask.
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor_view.h"

namespace pangu::merge {

constexpr int64_t kBlock = 4096;  // elements per work unit; fixed so results ignore the thread count

enum class Sparsify : int { None = 0, Magnitude = 1, Random = 2 };

struct TaskVectorOptions {
  std::vector<double> weights;    // one per model
  std::vector<double> densities;  // one per model, in [0, 1]; read for Magnitude and Random
  Sparsify sparsify = Sparsify::None;
  bool sign_consensus = false;
  bool normalize = false;
  double lambda = 1.0;
  uint64_t seed = 0;       // Random: with tensor_id and the model index, names the drop pattern
  uint64_t tensor_id = 0;
  // Random: the index of the first element within its whole tensor, so that merging a tensor slice
  // by slice draws exactly what merging it at once draws.
  uint64_t first_index = 0;
};

// Merges `models` (optionally around `base`) into `out` by the formula above. All tensors: CPU,
// contiguous, same element count, float32/float16/bfloat16; `out` writable and not aliasing inputs.
// Returns how many output elements are NaN or infinite (the caller names the tensor).
// Magnitude: keeps exactly k_i = floor(density_i * n) entries of largest |d_i| (ties broken by lower
// index), found by a two-pass radix histogram select: O(n) per model, no sort, no scratch of size n.
// Random: keeps an entry when u(seed, tensor_id, i, index) < density_i and divides it by density_i;
// u is a counter-based hash, so the pattern depends on nothing else.
// Blocks are handed to the threads dynamically (a shared counter), so a thread slowed by another
// process does not hold the rest back; every block's result depends only on its own elements.
// Thread-safe (no shared state); releases nothing itself (bindings drop the GIL). O(n * models).
int64_t merge_task_vectors(const TensorView* base, const std::vector<TensorView>& models,
                           const TaskVectorOptions& options, const TensorView& out);

// Spherical interpolation of two tensors treated as flat vectors: angle from their normalised dot
// product (float64, summed block by block), linear interpolation when |cos| > dot_threshold.
// t in [0, 1]. Same tensor rules and return value as merge_task_vectors.
int64_t slerp(const TensorView& a, const TensorView& b, double t, double dot_threshold, double eps,
              const TensorView& out);

// The k-th largest |model - base| (k >= 1, <= n) as float32, with how many entries are strictly
// larger. Exposed for tests of the selection. O(n).
struct MagnitudeThreshold {
  float value = 0.0f;
  int64_t greater = 0;  // entries with |d| > value
  int64_t equal = 0;    // entries with |d| == value
};
MagnitudeThreshold kth_magnitude(const TensorView* base, const TensorView& model, int64_t k);

// The uniform [0, 1) draw DARE uses for element `index` of model `model` in tensor `tensor_id`:
// 24 bits of a splitmix64-style hash, exactly representable in float32.
float dare_uniform(uint64_t seed, uint64_t tensor_id, uint64_t model, uint64_t index);

// Per-ISA block routines (merge_kernels_<isa>.cpp), chosen by active_isa().
struct BlockKernels {
  // out[j] = base[j] + lambda * mixed[j] over one block; deltas[i] hold d_i (already sparsified
  // and rescaled), weights[i] the w_i. base may be null. Returns non-finite count.
  int64_t (*combine)(const float* base, float* const* deltas, const double* weights, int models, int64_t len,
                     bool sign_consensus, bool normalize, float lambda, float* out);
  // deltas[j] = model[j] - base[j] (base may be null: copy).
  void (*subtract)(const float* model, const float* base, int64_t len, float* delta);  // delta may be model
  // DARE drop and rescale of one block whose first element has global index first_index.
  void (*drop)(float* delta, int64_t len, uint64_t key, uint64_t first_index, float density);
  // Zeroes entries with |delta| below the threshold bit pattern (equal ones too unless keep_equal).
  void (*trim)(float* delta, int64_t len, uint32_t threshold, bool keep_equal);
  // out[j] = ca * a[j] + cb * b[j]; returns non-finite count.
  int64_t (*blend)(const float* a, const float* b, float ca, float cb, int64_t len, float* out);
  // The whole no-sparsify, no-election formula over one block in one pass, reading the inputs and
  // writing the output in place (all inputs float32 or all bfloat16, out float32 or bfloat16, 1 to 4
  // models, base null or of the inputs' type): the same bits as the block path. Non-finite count.
  int64_t (*fused_mix)(const void* base, const void* const* models, int count, bool in_bf16, bool out_bf16,
                       const float* weights, float scale, int64_t len, void* out);
};
const BlockKernels& block_kernels();

namespace scalar {
extern const BlockKernels kBlockKernels;
}
namespace avx2 {
extern const BlockKernels kBlockKernels;
}
namespace avx512 {
extern const BlockKernels kBlockKernels;
}

}  // namespace pangu::merge
