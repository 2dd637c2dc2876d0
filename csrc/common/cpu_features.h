// Runtime instruction-set detection and the process-wide ISA choice used by every dispatcher.
#pragma once

#include <string>
#include <vector>

namespace pangu {

// Ordered from least to most capable; a dispatcher may use any level <= active_isa().
enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3 };

// Best level this CPU and OS support (AVX2 needs FMA and F16C; AVX-512 needs F, BW, VL, DQ).
// Probed once; thread-safe.
Isa detected_isa();
// Level dispatchers use now: detected_isa(), or lower if capped by set_isa() / PANGU_ISA.
// Thread-safe (a relaxed atomic read); a cap set while a call runs may or may not reach it.
Isa active_isa();
// Caps the level (tests use it to run every path). Throws ValueError for a level the CPU lacks.
void set_isa(Isa isa);
// Removes the cap, PANGU_ISA's included.
void reset_isa();
// Applies PANGU_ISA from the environment as the cap (unset or empty: no cap). Throws ValueError
// naming PANGU_ISA for an unknown name (listing the known ones) or a level this CPU cannot run, so
// the module refuses to load rather than run another path than the one asked for. Called once when
// the module is imported.
void apply_isa_environment();

const char* isa_name(Isa isa);
// Parses "scalar", "avx2", "avx512", "avx512_bf16"; throws ValueError naming `what` otherwise.
Isa parse_isa(const std::string& name, const char* what);
// parse_isa, then refuses (ValueError naming `what`) a level above `detected`, the best the CPU
// runs. Pure; `detected` is a parameter so the refusal can be tested on any CPU.
Isa resolve_isa(const std::string& name, const char* what, Isa detected);
// Every level up to detected_isa(), lowest first.
std::vector<Isa> available_isas();

}  // namespace pangu
