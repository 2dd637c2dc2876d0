// Runtime instruction-set detection and the process-wide ISA choice used by every dispatcher.
#pragma once

#include <string>
#include <vector>

namespace pangu {

// Ordered from least to most capable; a dispatcher may use any level <= active_isa().
enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3 };

// Best level this CPU and OS support (AVX2 needs FMA and F16C; AVX-512 needs F, BW, VL, DQ).
Isa detected_isa();
// Level dispatchers use now: detected_isa(), or lower if capped by set_isa() / PANGU_ISA.
Isa active_isa();
// Caps the level (tests use it to run every path). Throws ValueError for a level the CPU lacks.
void set_isa(Isa isa);
// Removes the cap.
void reset_isa();

const char* isa_name(Isa isa);
// Parses "scalar", "avx2", "avx512", "avx512_bf16"; throws ValueError naming `what` otherwise.
Isa parse_isa(const std::string& name, const char* what);
// Every level up to detected_isa(), lowest first.
std::vector<Isa> available_isas();

}  // namespace pangu
