// Element types the core understands, and exact scalar float16/bfloat16 <-> float32 conversions
// (round to nearest, ties to even; the reference the vector paths in convert.h must match).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace pangu {

enum class DType : uint8_t { F32, F16, BF16, F64, I8, U8, I16, I32, I64, Bool };

inline int64_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::Bool: return 1;
  }
  return 0;
}

// Names match torch's ("float32", "bfloat16", ...), so messages read like the Python side.
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::F64: return "float64";
    case DType::I8: return "int8";
    case DType::U8: return "uint8";
    case DType::I16: return "int16";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
    case DType::Bool: return "bool";
  }
  return "unknown";
}

// Parsers for every way a dtype reaches the core; bindings use these rather than their own tables.
// All are pure and thread-safe.

// The DType named `name` as dtype_name() spells it ("float32", "bfloat16", "int64", ...). Throws
// ValueError "<arg>: unknown dtype '<name>', expected one of float32, ..." otherwise.
DType parse_dtype(const std::string& name, const char* arg);
// The DType of a DLPack data type (type code: 0 int, 1 uint, 2 float, 4 bfloat, 6 bool; bits; lanes).
// Throws TypeError naming `arg` for a type the core does not handle (vectors, uint16, ...).
DType dtype_from_dlpack(uint8_t code, uint8_t bits, uint16_t lanes, const char* arg);
// The DType of a buffer-protocol item (struct-module format string, e.g. "<f", and item size in
// bytes). Throws TypeError naming `arg` for formats the core does not handle.
DType dtype_from_buffer_format(const std::string& format, int64_t itemsize, const char* arg);

inline bool is_float16_family(DType t) { return t == DType::F16 || t == DType::BF16; }

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float bf16_to_f32(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// NaN becomes the canonical quiet NaN 0x7FC0 (as torch does); everything else rounds to even.
inline uint16_t f32_to_bf16(float f) {
  uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    if (mantissa == 0) return bits_float(sign);
    // Subnormal: value = mantissa * 2^-24, exact in float32.
    float value = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
    return sign ? -value : value;
  }
  return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// NaN becomes 0x7E00 with the sign kept (as torch does); overflow becomes infinity.
inline uint16_t f32_to_f16(float f) {
  uint32_t x = float_bits(f);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return sign | 0x7e00u;
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds past the largest half, 65504
  if (x < 0x38800000u) {                         // below 2^-14: a subnormal half or zero
    uint32_t exponent = x >> 23;
    if (exponent < 102) return sign;             // below 2^-25: rounds to zero
    uint32_t mantissa = (x & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exponent;
    uint32_t result = mantissa >> shift;
    uint32_t rest = mantissa & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (result & 1u))) ++result;
    return sign | static_cast<uint16_t>(result);
  }
  uint32_t rounded = (x + 0xfffu + ((x >> 13) & 1u)) >> 13;
  return sign | static_cast<uint16_t>(rounded - (112u << 10));
}

}  // namespace pangu
