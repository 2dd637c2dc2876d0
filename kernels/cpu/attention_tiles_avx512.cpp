// AVX-512 attention path: 16 float lanes, 6 x 64 register tiles for the block products.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "common/convert.h"
#include "kernels/cpu/attention_kernels.h"

namespace pangu::attention::avx512 {

#include "kernels/cpu/attention_vec_avx512.inc"

#include "kernels/cpu/attention_tiles.inc"
#include "kernels/cpu/attention_passes.inc"

const Kernels kKernels = {&forward_items, &backward_dkdv, &backward_dq, &backward_fused, nullptr};

}  // namespace pangu::attention::avx512
