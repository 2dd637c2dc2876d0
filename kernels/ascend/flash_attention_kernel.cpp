// Ascend C flash-attention forward (prefill and decode) for the AI Core's vector units.
//
// Built only with the CANN toolkit (kernels/ascend/ascend.cmake, ascendc_library); launched by
// kernels/ascend/torch_npu_op.cpp. Not compiled or run in CI: kernels/ascend/host/
// flash_attention_sim.cpp executes the same schedule and update order on the CPU and is the tested
// model of this file; keep the two in step.
//
// Inputs (BNSD, contiguous, float16 or bfloat16): q (B, H, Sq, D), k and v (B, Hkv, Skv, D),
// kv_lens (int32, B; read when the record's has_kv_lens is 1), out (B, H, Sq, D), and the tiling
// record (flash_attention_tiling_data.h) in device memory. Each core runs the units
// [core_begin[i], core_begin[i + 1]) of the record; a unit is one batch entry, one KV head, a block of
// block_q query positions for all `group` query heads of that KV head (rows = group * block_q).
//
// Per unit: Q rows are loaded once and cast to float32; KV blocks of block_kv keys stream through two
// depth-2 queues, so block j + 1 is copied GM -> UB (MTE2) while block j is computed (V). For each row:
//   s = (q_row . K^T) * scale      64-lane chunks: Mul with the q chunk repeated over the block's keys,
//                                  WholeReduceSum per key, chunks added in order
//   m_new = max(m, max(s)); p = exp(s - m_new); alpha = exp(m - m_new) (0 for the first block)
//   l = alpha * l + sum(p); o = alpha * o + sum_c p_c * v_c (Axpy key by key)
// and finally o / l (zeros for a row that saw no key), cast to the output dtype and copied out.
// Causal rows (bottom-right aligned) and per-sequence lengths only shorten the count of keys a row
// uses in a block, so no mask tensor exists on chip.
#include "kernel_operator.h"
#include "kernels/ascend/host/flash_attention_tiling_data.h"

using namespace AscendC;

namespace {

constexpr int32_t kBufferNum = 2;      // K/V double buffering
constexpr int32_t kLanes = 64;         // float32 lanes in one 256-byte vector repeat
constexpr int32_t kBlockBytes = 32;    // UB access granularity
constexpr float kNoScore = -3.0e38f;   // running max before any key was seen

__aicore__ inline int32_t RoundUp(int32_t x, int32_t m) { return (x + m - 1) / m * m; }
__aicore__ inline int32_t Min(int32_t a, int32_t b) { return a < b ? a : b; }
__aicore__ inline int32_t Max(int32_t a, int32_t b) { return a > b ? a : b; }

// Keys visible to query position q (bottom-right causal alignment); see visible_keys() on the host.
__aicore__ inline int32_t VisibleKeys(int32_t causal, int32_t q, int32_t qLen, int32_t kvLen) {
  if (causal == 0) return kvLen;
  int32_t v = kvLen - qLen + q + 1;
  return v < 0 ? 0 : (v > kvLen ? kvLen : v);
}

__aicore__ inline void VectorToScalar() {
  event_t e = static_cast<event_t>(GetTPipePtr()->FetchEventID(HardEvent::V_S));
  SetFlag<HardEvent::V_S>(e);
  WaitFlag<HardEvent::V_S>(e);
}

__aicore__ inline void ScalarToVector() {
  event_t e = static_cast<event_t>(GetTPipePtr()->FetchEventID(HardEvent::S_V));
  SetFlag<HardEvent::S_V>(e);
  WaitFlag<HardEvent::S_V>(e);
}

template <typename T>
class FlashAttentionForward {
 public:
  __aicore__ inline FlashAttentionForward() {}

  __aicore__ inline void Init(GM_ADDR q, GM_ADDR k, GM_ADDR v, GM_ADDR kvLens, GM_ADDR out, GM_ADDR tiling) {
    ReadTiling(tiling);
    qGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(q));
    kGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(k));
    vGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(v));
    oGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(out));
    kvLensGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(kvLens));
    // Sizes mirror ub_budget() in flash_attention_tiling.cpp, which proves they fit in UB.
    const int32_t d = headDim_;
    const int32_t tileIn = RoundUp(rows_ * d * static_cast<int32_t>(sizeof(T)), kBlockBytes);
    const int32_t blockIn = RoundUp(blockKv_ * d * static_cast<int32_t>(sizeof(T)), kBlockBytes);
    const int32_t keyRow = RoundUp(blockKv_ * 4, kBlockBytes);
    rowsPad_ = RoundUp(rows_, kBlockBytes / 4);
    pipe_.InitBuffer(qQue_, 1, tileIn);
    pipe_.InitBuffer(kQue_, kBufferNum, blockIn);
    pipe_.InitBuffer(vQue_, kBufferNum, blockIn);
    pipe_.InitBuffer(oQue_, 1, tileIn);
    pipe_.InitBuffer(qBuf_, RoundUp(rows_ * d * 4, kBlockBytes));
    pipe_.InitBuffer(kBuf_, RoundUp(blockKv_ * d * 4, kBlockBytes));
    pipe_.InitBuffer(vBuf_, RoundUp(blockKv_ * d * 4, kBlockBytes));
    pipe_.InitBuffer(oBuf_, RoundUp(rows_ * d * 4, kBlockBytes));
    pipe_.InitBuffer(scoreBuf_, keyRow);
    pipe_.InitBuffer(productBuf_, blockKv_ * kLanes * 4);
    pipe_.InitBuffer(partialBuf_, keyRow);
    pipe_.InitBuffer(statBuf_, 2 * rowsPad_ * 4);
    pipe_.InitBuffer(workBuf_, RoundUp(Max(blockKv_, kLanes) * 4, kBlockBytes));
    pipe_.InitBuffer(reduceBuf_, kBlockBytes);
    pipe_.InitBuffer(scratchBuf_, kBlockBytes);
  }

  __aicore__ inline void Process() {
    const int32_t core = static_cast<int32_t>(GetBlockIdx());
    if (core >= usedCores_) return;
    for (int32_t unit = unitBegin_; unit < unitEnd_; ++unit) RunUnit(unit);
  }

 private:
  __aicore__ inline void ReadTiling(GM_ADDR tiling) {
    const __gm__ pangu::ascend::FlashAttentionTilingData* t =
        reinterpret_cast<const __gm__ pangu::ascend::FlashAttentionTilingData*>(tiling);
    heads_ = t->heads;
    kvHeads_ = t->kv_heads;
    qLen_ = t->q_len;
    kvLen_ = t->kv_len;
    headDim_ = t->head_dim;
    group_ = t->group;
    blockQ_ = t->block_q;
    blockKv_ = t->block_kv;
    rows_ = t->rows;
    qBlocks_ = t->q_blocks;
    chunks_ = t->chunks;
    causal_ = t->causal;
    hasKvLens_ = t->has_kv_lens;
    usedCores_ = t->used_cores;
    scale_ = t->scale;
    const int32_t core = static_cast<int32_t>(GetBlockIdx());
    unitBegin_ = core < usedCores_ ? t->core_begin[core] : 0;
    unitEnd_ = core < usedCores_ ? t->core_begin[core + 1] : 0;
  }

  __aicore__ inline void RunUnit(int32_t unit) {
    const int32_t qBlock = unit % qBlocks_;
    const int32_t bh = unit / qBlocks_;
    const int32_t kvHead = bh % kvHeads_;
    const int32_t batch = bh / kvHeads_;
    qBegin_ = qBlock * blockQ_;
    nq_ = Min(qLen_, qBegin_ + blockQ_) - qBegin_;
    unitRows_ = group_ * nq_;
    seqKvLen_ = hasKvLens_ != 0 ? kvLensGm_.GetValue(batch) : kvLen_;
    const int32_t keys = VisibleKeys(causal_, qBegin_ + nq_ - 1, qLen_, seqKvLen_);
    const int32_t kvBlocks = (keys + blockKv_ - 1) / blockKv_;
    const int64_t kvBase = (static_cast<int64_t>(batch) * kvHeads_ + kvHead) * kvLen_ * headDim_;

    LoadQ(batch, kvHead);
    LocalTensor<float> o = oBuf_.Get<float>();
    LocalTensor<float> stat = statBuf_.Get<float>();
    Duplicate(o, 0.0f, unitRows_ * headDim_);
    for (int32_t r = 0; r < unitRows_; ++r) {
      stat.SetValue(r, kNoScore);
      stat.SetValue(rowsPad_ + r, 0.0f);
    }
    ScalarToVector();
    PipeBarrier<PIPE_V>();
    if (kvBlocks > 0) CopyInKv(kvBase, 0);
    for (int32_t j = 0; j < kvBlocks; ++j) {
      if (j + 1 < kvBlocks) CopyInKv(kvBase, j + 1);  // prefetch: MTE2 overlaps this block's compute
      ComputeBlock(j);
    }
    StoreO(batch, kvHead);
  }

  __aicore__ inline void LoadQ(int32_t batch, int32_t kvHead) {
    LocalTensor<T> qIn = qQue_.AllocTensor<T>();
    const int32_t count = nq_ * headDim_;
    for (int32_t g = 0; g < group_; ++g) {
      const int64_t head = static_cast<int64_t>(kvHead) * group_ + g;
      const int64_t offset = ((static_cast<int64_t>(batch) * heads_ + head) * qLen_ + qBegin_) * headDim_;
      DataCopy(qIn[g * count], qGm_[offset], count);
    }
    qQue_.EnQue(qIn);
    qIn = qQue_.DeQue<T>();
    LocalTensor<float> qF = qBuf_.Get<float>();
    Cast(qF, qIn, RoundMode::CAST_NONE, unitRows_ * headDim_);
    PipeBarrier<PIPE_V>();
    qQue_.FreeTensor(qIn);
  }

  __aicore__ inline void CopyInKv(int64_t kvBase, int32_t block) {
    const int32_t kvBegin = block * blockKv_;
    const int32_t count = Min(blockKv_, seqKvLen_ - kvBegin) * headDim_;
    LocalTensor<T> kIn = kQue_.AllocTensor<T>();
    LocalTensor<T> vIn = vQue_.AllocTensor<T>();
    DataCopy(kIn, kGm_[kvBase + static_cast<int64_t>(kvBegin) * headDim_], count);
    DataCopy(vIn, vGm_[kvBase + static_cast<int64_t>(kvBegin) * headDim_], count);
    kQue_.EnQue(kIn);
    vQue_.EnQue(vIn);
  }

  // s[0:cnt] = q_row . k_c for the block's first cnt keys, summed by 64-lane chunks in order.
  __aicore__ inline void RowScores(int32_t row, int32_t cnt, const LocalTensor<float>& score) {
    LocalTensor<float> qF = qBuf_.Get<float>();
    LocalTensor<float> kF = kBuf_.Get<float>();
    LocalTensor<float> product = productBuf_.Get<float>();
    LocalTensor<float> partial = partialBuf_.Get<float>();
    const uint8_t keyStride = static_cast<uint8_t>(headDim_ / 8);  // one key row, in 32-byte blocks
    for (int32_t ch = 0; ch < chunks_; ++ch) {
      const int32_t lane0 = ch * kLanes;
      const int32_t lanes = Min(kLanes, headDim_ - lane0);
      // Repeat c multiplies key c's chunk by the same q chunk (src1 repeat stride 0).
      Mul(product, kF[lane0], qF[row * headDim_ + lane0], static_cast<uint64_t>(lanes), static_cast<uint8_t>(cnt),
          BinaryRepeatParams(1, 1, 1, 8, keyStride, 0));
      PipeBarrier<PIPE_V>();
      WholeReduceSum<float>(ch == 0 ? score : partial, product, lanes, cnt, 1, 1, 8);
      PipeBarrier<PIPE_V>();
      if (ch > 0) {
        Add(score, score, partial, cnt);
        PipeBarrier<PIPE_V>();
      }
    }
  }

  __aicore__ inline void ComputeBlock(int32_t block) {
    const int32_t kvBegin = block * blockKv_;
    const int32_t nValid = Min(blockKv_, seqKvLen_ - kvBegin);
    LocalTensor<T> kIn = kQue_.DeQue<T>();
    LocalTensor<T> vIn = vQue_.DeQue<T>();
    LocalTensor<float> kF = kBuf_.Get<float>();
    LocalTensor<float> vF = vBuf_.Get<float>();
    Cast(kF, kIn, RoundMode::CAST_NONE, nValid * headDim_);
    Cast(vF, vIn, RoundMode::CAST_NONE, nValid * headDim_);
    PipeBarrier<PIPE_V>();
    kQue_.FreeTensor(kIn);
    vQue_.FreeTensor(vIn);

    LocalTensor<float> score = scoreBuf_.Get<float>();
    LocalTensor<float> work = workBuf_.Get<float>();
    LocalTensor<float> reduced = reduceBuf_.Get<float>();
    LocalTensor<float> scratch = scratchBuf_.Get<float>();
    LocalTensor<float> stat = statBuf_.Get<float>();
    LocalTensor<float> o = oBuf_.Get<float>();
    for (int32_t r = 0; r < unitRows_; ++r) {
      const int32_t qPos = qBegin_ + r % nq_;
      const int32_t visible = VisibleKeys(causal_, qPos, qLen_, seqKvLen_) - kvBegin;
      const int32_t cnt = visible < 0 ? 0 : Min(visible, nValid);
      if (cnt == 0) continue;
      RowScores(r, cnt, score);
      Muls(score, score, scale_, cnt);
      PipeBarrier<PIPE_V>();
      ReduceMax<float>(reduced, score, work, cnt, false);
      VectorToScalar();
      const float blockMax = reduced.GetValue(0);
      const float mOld = stat.GetValue(r);
      const float mNew = mOld > blockMax ? mOld : blockMax;
      Adds(score, score, -mNew, cnt);
      PipeBarrier<PIPE_V>();
      Exp(score, score, cnt);
      PipeBarrier<PIPE_V>();
      ReduceSum<float>(reduced, score, work, cnt);
      PipeBarrier<PIPE_V>();
      const bool first = mOld == kNoScore;
      if (!first) {
        scratch.SetValue(0, mOld - mNew);
        ScalarToVector();
        Exp(scratch, scratch, 1);
        PipeBarrier<PIPE_V>();
      }
      VectorToScalar();
      const float blockSum = reduced.GetValue(0);
      const float alpha = first ? 0.0f : scratch.GetValue(0);
      stat.SetValue(r, mNew);
      stat.SetValue(rowsPad_ + r, alpha * stat.GetValue(rowsPad_ + r) + blockSum);
      LocalTensor<float> oRow = o[r * headDim_];
      Muls(oRow, oRow, alpha, headDim_);
      PipeBarrier<PIPE_V>();
      for (int32_t c = 0; c < cnt; ++c) {
        const float p = score.GetValue(c);
        Axpy(oRow, vF[c * headDim_], p, headDim_);
        PipeBarrier<PIPE_V>();
      }
      ScalarToVector();  // the next row's vector writes to `score` wait for these scalar reads
    }
  }

  __aicore__ inline void StoreO(int32_t batch, int32_t kvHead) {
    LocalTensor<float> o = oBuf_.Get<float>();
    LocalTensor<float> stat = statBuf_.Get<float>();
    for (int32_t r = 0; r < unitRows_; ++r) {
      const float l = stat.GetValue(rowsPad_ + r);
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      Muls(o[r * headDim_], o[r * headDim_], inv, headDim_);
    }
    PipeBarrier<PIPE_V>();
    LocalTensor<T> oOut = oQue_.AllocTensor<T>();
    Cast(oOut, o, RoundMode::CAST_RINT, unitRows_ * headDim_);
    oQue_.EnQue(oOut);
    oOut = oQue_.DeQue<T>();
    const int32_t count = nq_ * headDim_;
    for (int32_t g = 0; g < group_; ++g) {
      const int64_t head = static_cast<int64_t>(kvHead) * group_ + g;
      const int64_t offset = ((static_cast<int64_t>(batch) * heads_ + head) * qLen_ + qBegin_) * headDim_;
      DataCopy(oGm_[offset], oOut[g * count], count);
    }
    oQue_.FreeTensor(oOut);
  }

  TPipe pipe_;
  TQue<TPosition::VECIN, 1> qQue_;
  TQue<TPosition::VECIN, kBufferNum> kQue_;
  TQue<TPosition::VECIN, kBufferNum> vQue_;
  TQue<TPosition::VECOUT, 1> oQue_;
  TBuf<TPosition::VECCALC> qBuf_, kBuf_, vBuf_, oBuf_, scoreBuf_, productBuf_, partialBuf_, statBuf_, workBuf_,
      reduceBuf_, scratchBuf_;
  GlobalTensor<T> qGm_, kGm_, vGm_, oGm_;
  GlobalTensor<int32_t> kvLensGm_;
  int32_t heads_ = 0, kvHeads_ = 0, qLen_ = 0, kvLen_ = 0, headDim_ = 0, group_ = 0, blockQ_ = 0, blockKv_ = 0;
  int32_t rows_ = 0, rowsPad_ = 0, qBlocks_ = 0, chunks_ = 0, causal_ = 0, hasKvLens_ = 0, usedCores_ = 0;
  int32_t unitBegin_ = 0, unitEnd_ = 0, qBegin_ = 0, nq_ = 0, unitRows_ = 0, seqKvLen_ = 0;
  float scale_ = 1.0f;
};

}  // namespace

extern "C" __global__ __aicore__ void pangu_flash_attention_fwd_f16(GM_ADDR q, GM_ADDR k, GM_ADDR v, GM_ADDR kvLens,
                                                                    GM_ADDR out, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  FlashAttentionForward<half> op;
  op.Init(q, k, v, kvLens, out, tiling);
  op.Process();
}

extern "C" __global__ __aicore__ void pangu_flash_attention_fwd_bf16(GM_ADDR q, GM_ADDR k, GM_ADDR v, GM_ADDR kvLens,
                                                                     GM_ADDR out, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  FlashAttentionForward<bfloat16_t> op;
  op.Init(q, k, v, kvLens, out, tiling);
  op.Process();
}
