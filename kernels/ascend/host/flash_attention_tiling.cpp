#include "kernels/ascend/host/flash_attention_tiling.h"

#include <algorithm>
#include <sstream>

#include "common/errors.h"

namespace pangu::ascend {
namespace {

// The kernel's tiling struct has room for this many per-core ranges.
constexpr int64_t kMaxCores = kKernelMaxCores;
constexpr int64_t kMaxHeadDim = 256;
// Vector instructions repeat at most 255 times; the kernel issues one repeat per key of a block.
constexpr int64_t kMaxBlockKv = 255;

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }

void collect_problems(const AttentionShape& s, const HardwareSpec& hw, std::vector<std::string>& out) {
  auto need = [&out](bool ok, const std::string& message) {
    if (!ok) out.push_back(message);
  };
  auto str = [](int64_t v) { return std::to_string(v); };
  need(s.batch >= 1, "batch: expected >= 1, got " + str(s.batch));
  need(s.heads >= 1, "heads: expected >= 1, got " + str(s.heads));
  need(s.kv_heads >= 1, "kv_heads: expected >= 1, got " + str(s.kv_heads));
  if (s.heads >= 1 && s.kv_heads >= 1)
    need(s.heads % s.kv_heads == 0,
         "kv_heads: expected a divisor of heads=" + str(s.heads) + ", got " + str(s.kv_heads));
  need(s.q_len >= 1, "q_len: expected >= 1, got " + str(s.q_len));
  need(s.kv_len >= 1, "kv_len: expected >= 1, got " + str(s.kv_len));
  need(s.head_dim >= 16 && s.head_dim <= kMaxHeadDim && s.head_dim % 16 == 0,
       "head_dim: expected a multiple of 16 in [16, 256] (32-byte rows for DataCopy), got " + str(s.head_dim));
  need(s.elem_bytes == 2 || s.elem_bytes == 4,
       "elem_bytes: expected 2 (float16/bfloat16) or 4 (float32), got " + str(s.elem_bytes));
  if (!s.kv_lens.empty()) {
    need(static_cast<int64_t>(s.kv_lens.size()) == s.batch,
         "kv_lens: expected one length per batch entry (" + str(s.batch) + "), got " + str(s.kv_lens.size()));
    for (size_t i = 0; i < s.kv_lens.size(); ++i) {
      if (s.kv_lens[i] < 0 || s.kv_lens[i] > s.kv_len) {
        out.push_back("kv_lens[" + str(static_cast<int64_t>(i)) + "]: expected in [0, kv_len=" + str(s.kv_len) +
                      "], got " + str(s.kv_lens[i]));
        break;
      }
    }
  }
  need(hw.ub_bytes >= 1024, "ub_bytes: expected >= 1024, got " + str(hw.ub_bytes));
  need(hw.l1_bytes >= 1024, "l1_bytes: expected >= 1024, got " + str(hw.l1_bytes));
  need(hw.l0a_bytes >= 512, "l0a_bytes: expected >= 512, got " + str(hw.l0a_bytes));
  need(hw.l0b_bytes >= 512, "l0b_bytes: expected >= 512, got " + str(hw.l0b_bytes));
  need(hw.l0c_bytes >= 1024, "l0c_bytes: expected >= 1024, got " + str(hw.l0c_bytes));
  need(hw.num_cores >= 1 && hw.num_cores <= kMaxCores,
       "num_cores: expected in [1, " + str(kMaxCores) + "], got " + str(hw.num_cores));
}

int64_t seq_kv_len(const AttentionShape& s, int64_t b) {
  return s.kv_lens.empty() ? s.kv_len : s.kv_lens[static_cast<size_t>(b)];
}

struct Fit {
  UbBudget ub;
  int64_t l1 = 0, l0a = 0, l0b = 0, l0c = 0;
  bool ok = false;
};

Fit check_fit(int64_t rows, int64_t block_kv, const AttentionShape& s, const HardwareSpec& hw) {
  Fit f;
  f.ub = ub_budget(rows, block_kv, s.head_dim, s.elem_bytes);
  const int64_t eb = s.elem_bytes, d = s.head_dim;
  f.l1 = round_up(rows * d * eb, 32) + 4 * round_up(block_kv * d * eb, 32);
  // The cube unit works on 16-row fractals, so the left matrix and the result pad rows to 16.
  f.l0a = round_up(rows, 16) * d * eb;
  f.l0b = d * block_kv * eb;
  f.l0c = round_up(rows, 16) * block_kv * 4;
  f.ok = f.ub.total() <= hw.ub_bytes && f.l1 <= hw.l1_bytes && f.l0a <= hw.l0a_bytes && f.l0b <= hw.l0b_bytes &&
         f.l0c <= hw.l0c_bytes;
  return f;
}

}  // namespace

int64_t visible_keys(bool causal, int64_t q, int64_t q_len, int64_t kv_len) {
  if (!causal) return kv_len;
  int64_t v = kv_len - q_len + q + 1;
  return v < 0 ? 0 : (v > kv_len ? kv_len : v);
}

UbBudget ub_budget(int64_t rows, int64_t block_kv, int64_t head_dim, int64_t elem_bytes) {
  UbBudget u;
  const int64_t d = head_dim;
  u.q_in = round_up(rows * d * elem_bytes, 32);
  u.k_in = 2 * round_up(block_kv * d * elem_bytes, 32);
  u.v_in = 2 * round_up(block_kv * d * elem_bytes, 32);
  u.o_out = round_up(rows * d * elem_bytes, 32);
  u.q_f32 = round_up(rows * d * 4, 32);
  u.k_f32 = round_up(block_kv * d * 4, 32);
  u.v_f32 = round_up(block_kv * d * 4, 32);
  u.o_acc = round_up(rows * d * 4, 32);
  u.score_row = round_up(block_kv * 4, 32);
  u.product = block_kv * 64 * 4;
  u.partial = round_up(block_kv * 4, 32);
  u.row_stats = 2 * round_up(rows * 4, 32);
  u.reduce_work = round_up(std::max<int64_t>(block_kv, 64) * 4, 32) + 32 + 32;
  return u;
}

Unit unit_at(const AttentionShape& s, const Tiling& t, int64_t index) {
  PANGU_CHECK(index >= 0 && index < t.num_units, Index, "unit: expected in [0, ", t.num_units, "), got ", index);
  Unit u;
  const int64_t qb = index % t.q_blocks;
  const int64_t bh = index / t.q_blocks;
  u.kv_head = bh % s.kv_heads;
  u.batch = bh / s.kv_heads;
  u.q_begin = qb * t.block_q;
  u.q_end = std::min(s.q_len, u.q_begin + t.block_q);
  u.kv_len = seq_kv_len(s, u.batch);
  // The last row of a unit sees the most keys, so it bounds the blocks the unit must visit.
  const int64_t keys = visible_keys(s.causal, u.q_end - 1, s.q_len, u.kv_len);
  u.kv_blocks = ceil_div(keys, t.block_kv);
  return u;
}

Tiling plan_tiling(const AttentionShape& s, const HardwareSpec& hw) {
  std::vector<std::string> problems;
  collect_problems(s, hw, problems);
  if (!problems.empty()) {
    std::string joined;
    for (const auto& p : problems) joined += (joined.empty() ? "" : "; ") + p;
    fail(ErrorKind::Value, joined);
  }
  const int64_t group = s.heads / s.kv_heads;
  int64_t max_kv = 0;
  for (int64_t b = 0; b < s.batch; ++b) max_kv = std::max(max_kv, seq_kv_len(s, b));
  const int64_t kv_cap = std::min(kMaxBlockKv / 16 * 16, round_up(std::max<int64_t>(max_kv, 1), 16));
  int64_t q_cap = 1;
  while (q_cap < s.q_len && q_cap < 128) q_cap *= 2;

  // Score each feasible (block_q, block_kv): reuse per byte moved grows like the harmonic mean of
  // the tile's rows and keys; too few units leave cores idle, which scales the score down.
  double best_score = -1.0;
  int64_t best_q = 0, best_kv = 0;
  for (int64_t bkv = std::min<int64_t>(kv_cap, 128); bkv >= 16; bkv -= 16) {
    for (int64_t bq = q_cap; bq >= 1; bq /= 2) {
      if (!check_fit(group * bq, bkv, s, hw).ok) continue;
      const double rows = static_cast<double>(group * std::min(bq, s.q_len));
      const double keys = static_cast<double>(std::min(bkv, std::max<int64_t>(max_kv, 1)));
      const double units = static_cast<double>(s.batch * s.kv_heads * ceil_div(s.q_len, bq));
      const double busy = std::min(1.0, units / static_cast<double>(hw.num_cores));
      const double score = rows * keys / (rows + keys) * busy;
      if (score > best_score * (1.0 + 1e-9)) {
        best_score = score;
        best_q = bq;
        best_kv = bkv;
      }
    }
  }
  if (best_q == 0) {
    Fit smallest = check_fit(group, 16, s, hw);
    fail(ErrorKind::Value, "ub_bytes: no tile fits the on-chip buffers; the smallest (", group, " rows x 16 keys, head_dim ",
         s.head_dim, ") needs UB ", smallest.ub.total(), " of ", hw.ub_bytes, ", L1 ", smallest.l1, " of ", hw.l1_bytes,
         ", L0A ", smallest.l0a, " of ", hw.l0a_bytes, ", L0B ", smallest.l0b, " of ", hw.l0b_bytes, ", L0C ",
         smallest.l0c, " of ", hw.l0c_bytes, " bytes (fewer query heads per KV head or a smaller head_dim fit)");
  }

  Tiling t;
  t.block_q = best_q;
  t.block_kv = best_kv;
  t.group = group;
  t.rows = group * best_q;
  t.q_blocks = ceil_div(s.q_len, best_q);
  t.kv_blocks = ceil_div(s.kv_len, best_kv);
  t.num_units = s.batch * s.kv_heads * t.q_blocks;
  t.chunks = ceil_div(s.head_dim, 64);
  Fit fit = check_fit(t.rows, t.block_kv, s, hw);
  t.ub = fit.ub;
  t.l1_bytes = fit.l1;
  t.l0a_bytes = fit.l0a;
  t.l0b_bytes = fit.l0b;
  t.l0c_bytes = fit.l0c;

  // Cost of a unit: the (row, key) pairs of the blocks it visits, plus one block for loading Q and
  // writing O, so that units with nothing to attend to still count.
  t.unit_cost.resize(static_cast<size_t>(t.num_units));
  int64_t total = 0;
  for (int64_t i = 0; i < t.num_units; ++i) {
    Unit u = unit_at(s, t, i);
    int64_t cost = group * (u.q_end - u.q_begin) * t.block_kv * (u.kv_blocks + 1);
    t.unit_cost[static_cast<size_t>(i)] = cost;
    total += cost;
  }
  // Contiguous ranges keep a core's units on neighbouring heads (shared K/V stays in L2); core c
  // takes units until the running cost passes (c + 1) / cores of the total.
  const int64_t cores = std::min(hw.num_cores, t.num_units);
  t.core_begin.assign(static_cast<size_t>(hw.num_cores + 1), t.num_units);
  t.core_begin[0] = 0;
  int64_t unit = 0, running = 0;
  for (int64_t c = 0; c < cores; ++c) {
    t.core_begin[static_cast<size_t>(c)] = unit;
    const int64_t remaining_cores = cores - c;
    const int64_t target = total * (c + 1) / cores;
    // Leave at least one unit for each remaining core.
    while (unit < t.num_units - (remaining_cores - 1) &&
           (running < target || unit == t.core_begin[static_cast<size_t>(c)])) {
      running += t.unit_cost[static_cast<size_t>(unit)];
      ++unit;
    }
  }
  for (int64_t c = cores; c <= hw.num_cores; ++c) t.core_begin[static_cast<size_t>(c)] = t.num_units;
  t.used_cores = 0;
  for (int64_t c = 0; c < hw.num_cores; ++c)
    if (t.core_begin[static_cast<size_t>(c + 1)] > t.core_begin[static_cast<size_t>(c)]) ++t.used_cores;
  PANGU_ASSERT(unit == t.num_units);
  return t;
}

FlashAttentionTilingData pack_kernel_tiling(const AttentionShape& s, const Tiling& t, float scale) {
  const int64_t limit = 0x7fffffff;
  const int64_t dims[] = {s.batch, s.heads, s.kv_heads, s.q_len, s.kv_len, t.num_units,
                          s.batch * s.heads * s.q_len * s.head_dim, s.batch * s.kv_heads * s.kv_len * s.head_dim};
  for (int64_t d : dims) PANGU_CHECK(d <= limit, Value, "shape: expected sizes below 2^31 elements, got ", d);
  PANGU_CHECK(t.used_cores <= kKernelMaxCores, Value, "num_cores: the kernel record holds ", kKernelMaxCores,
              " cores, got ", t.used_cores);
  FlashAttentionTilingData d{};
  d.batch = static_cast<int32_t>(s.batch);
  d.heads = static_cast<int32_t>(s.heads);
  d.kv_heads = static_cast<int32_t>(s.kv_heads);
  d.q_len = static_cast<int32_t>(s.q_len);
  d.kv_len = static_cast<int32_t>(s.kv_len);
  d.head_dim = static_cast<int32_t>(s.head_dim);
  d.group = static_cast<int32_t>(t.group);
  d.block_q = static_cast<int32_t>(t.block_q);
  d.block_kv = static_cast<int32_t>(t.block_kv);
  d.rows = static_cast<int32_t>(t.rows);
  d.q_blocks = static_cast<int32_t>(t.q_blocks);
  d.chunks = static_cast<int32_t>(t.chunks);
  d.causal = s.causal ? 1 : 0;
  d.has_kv_lens = s.kv_lens.empty() ? 0 : 1;
  d.num_units = static_cast<int32_t>(t.num_units);
  d.used_cores = static_cast<int32_t>(t.used_cores);
  d.scale = scale;
  for (int64_t c = 0; c <= t.used_cores; ++c)
    d.core_begin[c] = static_cast<int32_t>(t.core_begin[static_cast<size_t>(c)]);
  return d;
}

std::string describe(const Tiling& t, const HardwareSpec& hw) {
  std::ostringstream out;
  out << "block_q=" << t.block_q << " block_kv=" << t.block_kv << " group=" << t.group << " rows=" << t.rows
      << " units=" << t.num_units << " cores=" << t.used_cores << "/" << hw.num_cores << " ub=" << t.ub.total() << "/"
      << hw.ub_bytes << " l1=" << t.l1_bytes << "/" << hw.l1_bytes << " l0a=" << t.l0a_bytes << "/" << hw.l0a_bytes
      << " l0b=" << t.l0b_bytes << "/" << hw.l0b_bytes << " l0c=" << t.l0c_bytes << "/" << hw.l0c_bytes;
  return out.str();
}

}  // namespace pangu::ascend
