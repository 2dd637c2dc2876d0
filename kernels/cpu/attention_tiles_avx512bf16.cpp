// AVX512-BF16 attention path: the AVX-512 float tiles, plus a bfloat16 prefill on AMX tiles (where
// the CPU and OS allow them): q.k and p.v as bfloat16 tile products with float32 accumulation, keys
// and values packed once per key block in the pair-interleaved layout the tile unit reads.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include <sys/syscall.h>
#include <unistd.h>
#include <cpuid.h>

#include "common/convert.h"
#include "common/threads.h"
#include "kernels/cpu/attention_kernels.h"

namespace pangu::attention::avx512bf16 {

#include "kernels/cpu/attention_vec_avx512.inc"

#include "kernels/cpu/attention_tiles.inc"
#include "kernels/cpu/attention_passes.inc"
#include "kernels/cpu/attention_amx.inc"

const Kernels kKernels = {&forward_items, &backward_dkdv, &backward_dq, &backward_fused, &forward_amx};

}  // namespace pangu::attention::avx512bf16
