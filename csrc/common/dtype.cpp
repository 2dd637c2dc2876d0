#include "common/dtype.h"

#include "common/errors.h"

namespace pangu {

namespace {
constexpr DType kAll[] = {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I8,
                          DType::U8,  DType::I16, DType::I32,  DType::I64, DType::Bool};
}  // namespace

DType parse_dtype(const std::string& name, const char* arg) {
  std::string known;
  for (DType d : kAll) {
    if (name == dtype_name(d)) return d;
    known += (known.empty() ? "" : ", ") + std::string(dtype_name(d));
  }
  fail(ErrorKind::Value, arg, ": unknown dtype '", name, "', expected one of ", known);
}

DType dtype_from_dlpack(uint8_t code, uint8_t bits, uint16_t lanes, const char* arg) {
  PANGU_CHECK(lanes == 1, Type, arg, ": vector dtypes (lanes=", lanes, ") are not supported");
  switch (code) {
    case 2:
      if (bits == 32) return DType::F32;
      if (bits == 16) return DType::F16;
      if (bits == 64) return DType::F64;
      break;
    case 4:
      if (bits == 16) return DType::BF16;
      break;
    case 0:
      if (bits == 8) return DType::I8;
      if (bits == 16) return DType::I16;
      if (bits == 32) return DType::I32;
      if (bits == 64) return DType::I64;
      break;
    case 1:
      if (bits == 8) return DType::U8;
      break;
    case 6:
      if (bits == 8) return DType::Bool;
      break;
  }
  fail(ErrorKind::Type, arg, ": unsupported dtype (DLPack code ", int(code), ", ", int(bits), " bits)");
}

DType dtype_from_buffer_format(const std::string& format, int64_t itemsize, const char* arg) {
  // The last character is the type; what precedes it is byte order or alignment ("<", "=", "@").
  char c = format.empty() ? '?' : format.back();
  if (itemsize == 4 && c == 'f') return DType::F32;
  if (itemsize == 8 && c == 'd') return DType::F64;
  if (itemsize == 2 && c == 'e') return DType::F16;
  if (itemsize == 1 && c == '?') return DType::Bool;
  if (itemsize == 1 && c == 'b') return DType::I8;
  if (itemsize == 1 && c == 'B') return DType::U8;
  if (itemsize == 2 && c == 'h') return DType::I16;
  if (itemsize == 4 && (c == 'i' || c == 'l')) return DType::I32;
  if (itemsize == 8 && (c == 'q' || c == 'l')) return DType::I64;
  fail(ErrorKind::Type, arg, ": unsupported buffer format '", format, "'");
}

}  // namespace pangu
