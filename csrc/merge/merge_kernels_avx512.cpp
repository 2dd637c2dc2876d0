// The merge block routines compiled with avx512 flags (see CMakeLists.txt). The code is the shared
// plain-loop source, which turns floating-point contraction off, so no FMA changes the bits relative
// to the scalar path.
#include "merge/merge_block_impl.h"
#include "merge/merge_kernels.h"

namespace pangu::merge::avx512 {
const BlockKernels kBlockKernels{block_impl::combine, block_impl::subtract, block_impl::drop, block_impl::trim,
                                    block_impl::blend, block_impl::fused_mix};
}  // namespace pangu::merge::avx512
