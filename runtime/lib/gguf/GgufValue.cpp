//===- GgufValue.cpp - GGUF metadata values and tensor type facts ---------===//
//
// The pieces shared by the reader and the writer: metadata value helpers and
// the lookup of tensor type ids, which extends Formats.def's quantization
// formats with the storage types (i8..i64, f64) GGUF files may also hold.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/Gguf.h"

#include <cstring>
#include <sstream>

namespace qcc::gguf {

namespace {
// The storage types are not Format enumerators; their FormatInfo carries the
// raw id cast to Format so that one struct describes every tensor type.
constexpr FormatInfo kStorageTypes[] = {
#define QCC_FORMAT(E, NAME, ID, BE, BB)
#define QCC_STORAGE_TYPE(E, NAME, ID, BE, BB)                                  \
  {static_cast<Format>(ID), NAME, ID, BE, BB},
#include "qcc/Runtime/Formats.def"
};
} // namespace

const FormatInfo *lookupTensorType(uint32_t ggmlId) {
  if (isRemovedGgmlType(ggmlId))
    return nullptr;
  if (const FormatInfo *info = lookupFormat(ggmlId))
    return info;
  for (const FormatInfo &info : kStorageTypes)
    if (info.ggmlId == ggmlId)
      return &info;
  return nullptr;
}

const FormatInfo *lookupTensorType(std::string_view name) {
  if (const FormatInfo *info = lookupFormat(name))
    return info;
  for (const FormatInfo &info : kStorageTypes)
    if (info.name == name)
      return &info;
  return nullptr;
}

bool isStorageType(uint32_t ggmlId) {
  for (const FormatInfo &info : kStorageTypes)
    if (info.ggmlId == ggmlId)
      return true;
  return false;
}

const char *valueTypeName(ValueType type) {
  switch (type) {
  case ValueType::U8: return "u8";
  case ValueType::I8: return "i8";
  case ValueType::U16: return "u16";
  case ValueType::I16: return "i16";
  case ValueType::U32: return "u32";
  case ValueType::I32: return "i32";
  case ValueType::F32: return "f32";
  case ValueType::Bool: return "bool";
  case ValueType::String: return "string";
  case ValueType::Array: return "array";
  case ValueType::U64: return "u64";
  case ValueType::I64: return "i64";
  case ValueType::F64: return "f64";
  }
  return "?";
}

size_t valueTypeSize(ValueType type) {
  switch (type) {
  case ValueType::U8:
  case ValueType::I8:
  case ValueType::Bool:
    return 1;
  case ValueType::U16:
  case ValueType::I16:
    return 2;
  case ValueType::U32:
  case ValueType::I32:
  case ValueType::F32:
    return 4;
  case ValueType::U64:
  case ValueType::I64:
  case ValueType::F64:
    return 8;
  case ValueType::String:
  case ValueType::Array:
    return 0;
  }
  return 0;
}

static Value scalar(ValueType type) {
  Value v;
  v.type = type;
  return v;
}

Value Value::makeU8(uint8_t x) { Value v = scalar(ValueType::U8); v.u = x; return v; }
Value Value::makeU16(uint16_t x) { Value v = scalar(ValueType::U16); v.u = x; return v; }
Value Value::makeU32(uint32_t x) { Value v = scalar(ValueType::U32); v.u = x; return v; }
Value Value::makeU64(uint64_t x) { Value v = scalar(ValueType::U64); v.u = x; return v; }
Value Value::makeI8(int8_t x) { Value v = scalar(ValueType::I8); v.i = x; return v; }
Value Value::makeI16(int16_t x) { Value v = scalar(ValueType::I16); v.i = x; return v; }
Value Value::makeI32(int32_t x) { Value v = scalar(ValueType::I32); v.i = x; return v; }
Value Value::makeI64(int64_t x) { Value v = scalar(ValueType::I64); v.i = x; return v; }
Value Value::makeF32(float x) { Value v = scalar(ValueType::F32); v.f32 = x; return v; }
Value Value::makeF64(double x) { Value v = scalar(ValueType::F64); v.f64 = x; return v; }
Value Value::makeBool(bool x) { Value v = scalar(ValueType::Bool); v.b = x; return v; }

Value Value::makeString(std::string x) {
  Value v = scalar(ValueType::String);
  v.str = std::move(x);
  return v;
}

Value Value::makeArray(ValueType elemType, const std::vector<Value> &elems) {
  Value v = scalar(ValueType::Array);
  v.elemType = elemType;
  size_t size = valueTypeSize(elemType);
  if (elemType == ValueType::String)
    v.strings.reserve(elems.size());
  else
    v.packed.reserve(elems.size() * size);
  for (const Value &e : elems) {
    if (elemType == ValueType::String) {
      v.strings.push_back(e.str);
      continue;
    }
    // The field that holds the element's type, its low `size` bytes (LE).
    uint8_t bytes[8] = {};
    switch (elemType) {
    case ValueType::U8:
    case ValueType::U16:
    case ValueType::U32:
    case ValueType::U64:
      std::memcpy(bytes, &e.u, 8);
      break;
    case ValueType::I8:
    case ValueType::I16:
    case ValueType::I32:
    case ValueType::I64:
      std::memcpy(bytes, &e.i, 8);
      break;
    case ValueType::F32:
      std::memcpy(bytes, &e.f32, 4);
      break;
    case ValueType::F64:
      std::memcpy(bytes, &e.f64, 8);
      break;
    case ValueType::Bool:
      bytes[0] = e.b ? 1 : 0;
      break;
    default:
      break;
    }
    v.packed.insert(v.packed.end(), bytes, bytes + size);
  }
  return v;
}

size_t Value::arraySize() const {
  if (type != ValueType::Array)
    return 0;
  if (elemType == ValueType::String)
    return strings.size();
  size_t size = valueTypeSize(elemType);
  return size ? packed.size() / size : 0;
}

Value Value::element(size_t k) const {
  Value e = scalar(elemType);
  if (elemType == ValueType::String) {
    e.str = strings[k];
    return e;
  }
  const uint8_t *p = packed.data() + k * valueTypeSize(elemType);
  switch (elemType) {
  case ValueType::U8: e.u = p[0]; break;
  case ValueType::I8: e.i = static_cast<int8_t>(p[0]); break;
  case ValueType::Bool: e.b = p[0] != 0; break;
  case ValueType::U16: { uint16_t x; std::memcpy(&x, p, 2); e.u = x; break; }
  case ValueType::I16: { int16_t x; std::memcpy(&x, p, 2); e.i = x; break; }
  case ValueType::U32: { uint32_t x; std::memcpy(&x, p, 4); e.u = x; break; }
  case ValueType::I32: { int32_t x; std::memcpy(&x, p, 4); e.i = x; break; }
  case ValueType::U64: std::memcpy(&e.u, p, 8); break;
  case ValueType::I64: std::memcpy(&e.i, p, 8); break;
  case ValueType::F32: std::memcpy(&e.f32, p, 4); break;
  case ValueType::F64: std::memcpy(&e.f64, p, 8); break;
  default: break;
  }
  return e;
}

bool Value::asUInt(uint64_t &out) const {
  switch (type) {
  case ValueType::U8:
  case ValueType::U16:
  case ValueType::U32:
  case ValueType::U64:
    out = u;
    return true;
  case ValueType::I8:
  case ValueType::I16:
  case ValueType::I32:
  case ValueType::I64:
    if (i < 0)
      return false;
    out = static_cast<uint64_t>(i);
    return true;
  default:
    return false;
  }
}

bool Value::operator==(const Value &o) const {
  if (type != o.type)
    return false;
  switch (type) {
  case ValueType::U8:
  case ValueType::U16:
  case ValueType::U32:
  case ValueType::U64:
    return u == o.u;
  case ValueType::I8:
  case ValueType::I16:
  case ValueType::I32:
  case ValueType::I64:
    return i == o.i;
  case ValueType::F32:
    // Bitwise, so NaNs compare equal to themselves and -0 != +0.
    return std::memcmp(&f32, &o.f32, sizeof f32) == 0;
  case ValueType::F64:
    return std::memcmp(&f64, &o.f64, sizeof f64) == 0;
  case ValueType::Bool:
    return b == o.b;
  case ValueType::String:
    return str == o.str;
  case ValueType::Array:
    // Packed bytes compare floats bitwise, like the scalars.
    return elemType == o.elemType && packed == o.packed && strings == o.strings;
  }
  return false;
}

static void quote(std::ostringstream &os, const std::string &s) {
  os << '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\')
      os << '\\' << c;
    else if (c == '\n')
      os << "\\n";
    else if (c < 0x20 || c == 0x7f) {
      static const char *hex = "0123456789abcdef";
      os << "\\x" << hex[c >> 4] << hex[c & 15];
    } else
      os << c;
  }
  os << '"';
}

std::string Value::toString(size_t maxElems) const {
  std::ostringstream os;
  os.precision(9);
  switch (type) {
  case ValueType::U8:
  case ValueType::U16:
  case ValueType::U32:
  case ValueType::U64:
    os << u;
    break;
  case ValueType::I8:
  case ValueType::I16:
  case ValueType::I32:
  case ValueType::I64:
    os << i;
    break;
  case ValueType::F32:
    os << f32;
    break;
  case ValueType::F64:
    os.precision(17);
    os << f64;
    break;
  case ValueType::Bool:
    os << (b ? "true" : "false");
    break;
  case ValueType::String:
    quote(os, str);
    break;
  case ValueType::Array: {
    os << '[';
    size_t n = arraySize();
    size_t shown = n < maxElems ? n : maxElems;
    for (size_t k = 0; k < shown; ++k)
      os << (k ? ", " : "") << element(k).toString(maxElems);
    if (shown < n)
      os << (shown ? ", " : "") << "... (" << n - shown << " more)";
    os << ']';
    break;
  }
  }
  return os.str();
}

uint64_t TensorInfo::numElements() const {
  uint64_t n = 1;
  for (uint32_t d = 0; d < nDims && d < kMaxDims; ++d)
    n *= static_cast<uint64_t>(ne[d]);
  return n;
}

} // namespace qcc::gguf
