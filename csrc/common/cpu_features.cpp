#include "common/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "common/errors.h"

namespace pangu {
namespace {

Isa probe() {
#if PANGU_HAVE_X86
  __builtin_cpu_init();
  // libgcc checks XGETBV, so these are false when the OS does not save the wider registers.
  bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  bool bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  if (bf16) return Isa::Avx512Bf16;
  if (avx512) return Isa::Avx512;
  if (avx2) return Isa::Avx2;
#endif
  return Isa::Scalar;
}

std::atomic<int>& cap() {
  static std::atomic<int> value{static_cast<int>(Isa::Avx512Bf16)};
  return value;
}

std::string supported_list(Isa detected) {
  std::string names;
  for (int i = 0; i <= static_cast<int>(detected); ++i)
    names += (names.empty() ? "" : ", ") + std::string(isa_name(static_cast<Isa>(i)));
  return names;
}

}  // namespace

Isa detected_isa() {
  static const Isa isa = probe();
  return isa;
}

Isa active_isa() {
  int c = cap().load(std::memory_order_relaxed);
  int d = static_cast<int>(detected_isa());
  return static_cast<Isa>(c < d ? c : d);
}

void set_isa(Isa isa) {
  PANGU_CHECK(static_cast<int>(isa) <= static_cast<int>(detected_isa()), Value,
              "isa: this CPU supports up to '", isa_name(detected_isa()), "', cannot select '",
              isa_name(isa), "'");
  cap().store(static_cast<int>(isa));
}

void reset_isa() { cap().store(static_cast<int>(Isa::Avx512Bf16)); }

void apply_isa_environment() {
  const char* env = std::getenv("PANGU_ISA");
  if (env == nullptr || *env == '\0') return;
  cap().store(static_cast<int>(resolve_isa(env, "PANGU_ISA", detected_isa())));
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512_bf16";
  }
  return "unknown";
}

Isa parse_isa(const std::string& name, const char* what) {
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16}) {
    if (name == isa_name(isa)) return isa;
  }
  fail(ErrorKind::Value, what, ": expected one of 'scalar', 'avx2', 'avx512', 'avx512_bf16', got '",
       name, "'");
}

Isa resolve_isa(const std::string& name, const char* what, Isa detected) {
  Isa isa = parse_isa(name, what);
  PANGU_CHECK(static_cast<int>(isa) <= static_cast<int>(detected), Value, what, ": this CPU runs ",
              supported_list(detected), "; it cannot run '", name, "'");
  return isa;
}

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (int i = 0; i <= static_cast<int>(detected_isa()); ++i) out.push_back(static_cast<Isa>(i));
  return out;
}

}  // namespace pangu
