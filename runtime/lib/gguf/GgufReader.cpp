//===- GgufReader.cpp - Strict, bounds-checked GGUF v2/v3 reader ----------===//
//
// Every read goes through a Cursor that checks the bytes exist first, and
// every length read from the file is compared with the bytes remaining before
// anything is allocated for it, so hostile counts cannot cause huge
// allocations. The first broken rule stops parsing with a one-line message:
//
//   rule <rule-id>: <what> at offset <N> (key '<k>' | tensor '<t>')
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/Gguf.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace qcc::gguf {

namespace {

/// Bytes the smallest possible record of each kind occupies; used to bound
/// counts before reserving memory for them.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;            // key len, type, u8
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8; // 1 dim, no name

std::string describe(const std::string &what, const std::string &name) {
  if (name.empty())
    return "";
  return " (" + what + " '" + name + "')";
}

/// Sanitizes a name taken from the file for a one-line error message.
std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 80))
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  if (s.size() > 80)
    out += "...";
  return out;
}

class Cursor {
public:
  Cursor(const uint8_t *base, uint64_t size) : Base(base), Size(size) {}

  uint64_t pos() const { return Pos; }
  uint64_t remaining() const { return Size - Pos; }

  /// Current context for messages: the key or tensor being parsed.
  std::string Ctx;

  bool fail(const char *rule, const std::string &what, uint64_t at) {
    std::ostringstream os;
    os << "rule " << rule << ": " << what << " at offset " << at << Ctx;
    Error = os.str();
    return false;
  }

  bool need(uint64_t n, const char *what) {
    if (n > remaining())
      return fail("truncated",
                  std::string("file ends inside ") + what + " (need " +
                      std::to_string(n) + " bytes, " +
                      std::to_string(remaining()) + " left)",
                  Pos);
    return true;
  }

  template <typename T> bool read(T &out, const char *what) {
    if (!need(sizeof(T), what))
      return false;
    // Little-endian host assumed (x86-64 / aarch64), as GGUF is LE.
    std::memcpy(&out, Base + Pos, sizeof(T));
    Pos += sizeof(T);
    return true;
  }

  bool readBytes(uint8_t *out, uint64_t n, const char *what) {
    if (!need(n, what))
      return false;
    if (n)
      std::memcpy(out, Base + Pos, static_cast<size_t>(n));
    Pos += n;
    return true;
  }

  /// A GGUF string: u64 length then bytes (no NUL). The length is checked
  /// against the remaining bytes before the std::string is built.
  bool readString(std::string &out, const char *what) {
    uint64_t at = Pos;
    uint64_t len;
    if (!read(len, what))
      return false;
    if (len > remaining())
      return fail("string-length",
                  std::string(what) + " length " + std::to_string(len) +
                      " exceeds the " + std::to_string(remaining()) +
                      " bytes left",
                  at);
    out.assign(reinterpret_cast<const char *>(Base + Pos),
               static_cast<size_t>(len));
    Pos += len;
    return true;
  }

  std::string Error;

private:
  const uint8_t *Base;
  uint64_t Size;
  uint64_t Pos = 0;
};

bool validValueType(uint32_t t) { return t <= 12; }

bool readScalar(Cursor &c, ValueType type, Value &v) {
  v.type = type;
  switch (type) {
  case ValueType::U8: {
    uint8_t x;
    if (!c.read(x, "u8 value")) return false;
    v.u = x;
    return true;
  }
  case ValueType::I8: {
    int8_t x;
    if (!c.read(x, "i8 value")) return false;
    v.i = x;
    return true;
  }
  case ValueType::U16: {
    uint16_t x;
    if (!c.read(x, "u16 value")) return false;
    v.u = x;
    return true;
  }
  case ValueType::I16: {
    int16_t x;
    if (!c.read(x, "i16 value")) return false;
    v.i = x;
    return true;
  }
  case ValueType::U32: {
    uint32_t x;
    if (!c.read(x, "u32 value")) return false;
    v.u = x;
    return true;
  }
  case ValueType::I32: {
    int32_t x;
    if (!c.read(x, "i32 value")) return false;
    v.i = x;
    return true;
  }
  case ValueType::U64:
    return c.read(v.u, "u64 value");
  case ValueType::I64:
    return c.read(v.i, "i64 value");
  case ValueType::F32:
    return c.read(v.f32, "f32 value");
  case ValueType::F64:
    return c.read(v.f64, "f64 value");
  case ValueType::Bool: {
    uint64_t at = c.pos();
    uint8_t x;
    if (!c.read(x, "bool value")) return false;
    // Only 0 and 1 are booleans; anything else is corruption, and accepting
    // it would make a write-back change the byte.
    if (x > 1)
      return c.fail("bool-value",
                    "bool value " + std::to_string(x) + " is not 0 or 1", at);
    v.b = x != 0;
    return true;
  }
  case ValueType::String:
    return c.readString(v.str, "string value");
  case ValueType::Array:
    break;
  }
  return false;
}

bool readValue(Cursor &c, ValueType type, Value &v, uint64_t &arrayBudget) {
  if (type != ValueType::Array)
    return readScalar(c, type, v);
  v.type = ValueType::Array;
  uint64_t at = c.pos();
  uint32_t elemType;
  if (!c.read(elemType, "array element type"))
    return false;
  if (!validValueType(elemType))
    return c.fail("value-type",
                  "array element type " + std::to_string(elemType) +
                      " is not a GGUF value type (0-12)",
                  at);
  if (static_cast<ValueType>(elemType) == ValueType::Array)
    return c.fail("nested-array", "arrays of arrays are not allowed", at);
  v.elemType = static_cast<ValueType>(elemType);
  uint64_t countAt = c.pos();
  uint64_t count;
  if (!c.read(count, "array length"))
    return false;
  // Each element occupies at least its fixed size (strings: their u64
  // length), so a count above remaining/min cannot be satisfied.
  uint64_t minElem = valueTypeSize(v.elemType);
  if (minElem == 0)
    minElem = 8;
  if (count > c.remaining() / minElem)
    return c.fail("array-length",
                  "array of " + std::to_string(count) + " " +
                      valueTypeName(v.elemType) + " elements needs more than the " +
                      std::to_string(c.remaining()) + " bytes left",
                  countAt);
  // A string element becomes a std::string (32 bytes) even when it is 8
  // in the file; a per-file budget keeps the memory bounded (real
  // vocabularies hold well under a million entries).
  if (count > arrayBudget)
    return c.fail("array-length",
                  "array of " + std::to_string(count) +
                      " elements exceeds the per-file limit of " +
                      std::to_string(kMaxArrayElements) + " array elements",
                  countAt);
  arrayBudget -= count;
  if (v.elemType == ValueType::String) {
    v.strings.resize(static_cast<size_t>(count));
    for (std::string &s : v.strings)
      if (!c.readString(s, "string value"))
        return false;
    return true;
  }
  // Fixed-size elements: their bytes as they are (bools checked, as the
  // scalar reader checks them).
  v.packed.resize(static_cast<size_t>(count * minElem));
  uint64_t start = c.pos();
  if (!c.readBytes(v.packed.data(), v.packed.size(), "array elements"))
    return false;
  if (v.elemType == ValueType::Bool)
    for (size_t k = 0; k < v.packed.size(); ++k)
      if (v.packed[k] > 1)
        return c.fail("bool-value",
                      "bool value " + std::to_string(v.packed[k]) +
                          " is not 0 or 1",
                      start + k);
  return true;
}

/// a * b into out, false on uint64 overflow.
bool mulOverflow(uint64_t a, uint64_t b, uint64_t &out) {
  return __builtin_mul_overflow(a, b, &out);
}
bool addOverflow(uint64_t a, uint64_t b, uint64_t &out) {
  return __builtin_add_overflow(a, b, &out);
}

/// Rounds up to a multiple of `align` (a power of two); false on overflow.
bool alignUp(uint64_t x, uint64_t align, uint64_t &out) {
  uint64_t t;
  if (addOverflow(x, align - 1, t))
    return false;
  out = t & ~(align - 1);
  return true;
}

} // namespace

std::unique_ptr<File> File::open(const std::string &path, std::string *error) {
  auto setError = [&](const std::string &msg) {
    if (error)
      *error = msg;
    return nullptr;
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return setError("cannot open: " + std::string(std::strerror(errno)));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return setError("cannot stat: " + std::string(std::strerror(e)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return setError("not a regular file");
  }
  std::unique_ptr<File> file(new File());
  file->Dev = static_cast<uint64_t>(st.st_dev);
  file->Ino = static_cast<uint64_t>(st.st_ino);
  file->Size = static_cast<uint64_t>(st.st_size);
  if (file->Size == 0) {
    ::close(fd);
    if (error)
      *error = "rule truncated: empty file (no GGUF header) at offset 0";
    return nullptr;
  }
  // MAP_PRIVATE + PROT_READ: the mapping can never write back to the input.
  void *p = mmap(nullptr, static_cast<size_t>(file->Size), PROT_READ,
                 MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);
  if (p == MAP_FAILED)
    return setError("cannot mmap: " + std::string(std::strerror(e)));
  file->Base = static_cast<const uint8_t *>(p);
  file->Mapped = true;
  if (!file->parse(error))
    return nullptr;
  return file;
}

std::unique_ptr<File> File::openMemory(const uint8_t *data, size_t size,
                                       std::string *error) {
  std::unique_ptr<File> file(new File());
  file->Base = data;
  file->Size = size;
  if (!file->parse(error))
    return nullptr;
  return file;
}

File::~File() {
  if (Mapped && Base)
    munmap(const_cast<uint8_t *>(Base), static_cast<size_t>(Size));
}

const Value *File::find(std::string_view key) const {
  auto it = KeyIndex.find(std::string(key));
  return it == KeyIndex.end() ? nullptr : &Metadata[it->second].second;
}

const TensorInfo *File::findTensor(std::string_view name) const {
  auto it = TensorIndex.find(std::string(name));
  return it == TensorIndex.end() ? nullptr : &Tensors[it->second];
}

bool File::parse(std::string *error) {
  Cursor c(Size ? Base : nullptr, Size);
  auto failed = [&]() {
    if (error)
      *error = c.Error;
    return false;
  };

  // --- Header -----------------------------------------------------------
  if (Size == 0) {
    c.fail("truncated", "empty file (no GGUF header)", 0);
    return failed();
  }
  uint8_t magic[4];
  if (!c.read(magic, "the magic"))
    return failed();
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    c.fail("magic", "file does not start with \"GGUF\"", 0);
    return failed();
  }
  uint32_t version;
  if (!c.read(version, "the version"))
    return failed();
  if (version == 0x02000000u || version == 0x03000000u ||
      version == 0x01000000u) {
    c.fail("version",
           "version " + std::to_string(__builtin_bswap32(version)) +
               " is byte-swapped (big-endian GGUF is not supported)",
           4);
    return failed();
  }
  if (version != 2 && version != 3) {
    c.fail("version",
           "unsupported version " + std::to_string(version) +
               (version == 1 ? " (v1 used 32-bit counts)" : "") +
               "; only 2 and 3 are read",
           4);
    return failed();
  }
  Version = version;
  uint64_t nTensors, nKv;
  if (!c.read(nTensors, "the tensor count") || !c.read(nKv, "the KV count"))
    return failed();
  // Both counts are bounded by what the rest of the file could hold, so the
  // reserves below can never be driven by a hostile count.
  if (nKv > c.remaining() / kMinKvBytes) {
    c.fail("kv-count",
           "KV count " + std::to_string(nKv) + " cannot fit in the " +
               std::to_string(c.remaining()) + " bytes left",
           16);
    return failed();
  }
  if (nTensors > c.remaining() / kMinTensorInfoBytes ||
      nKv * kMinKvBytes + nTensors * kMinTensorInfoBytes > c.remaining()) {
    c.fail("tensor-count",
           "tensor count " + std::to_string(nTensors) + " cannot fit in the " +
               std::to_string(c.remaining()) + " bytes left",
           8);
    return failed();
  }

  // --- Metadata ---------------------------------------------------------
  uint64_t arrayBudget = kMaxArrayElements;
  Metadata.reserve(static_cast<size_t>(nKv));
  for (uint64_t k = 0; k < nKv; ++k) {
    c.Ctx.clear();
    uint64_t keyAt = c.pos();
    std::string key;
    if (!c.readString(key, "key"))
      return failed();
    if (key.empty()) {
      c.fail("empty-key", "KV #" + std::to_string(k) + " has an empty key",
             keyAt);
      return failed();
    }
    c.Ctx = describe("key", printable(key));
    if (KeyIndex.count(key)) {
      c.fail("duplicate-key", "key appears twice", keyAt);
      return failed();
    }
    uint64_t typeAt = c.pos();
    uint32_t type;
    if (!c.read(type, "value type"))
      return failed();
    if (!validValueType(type)) {
      c.fail("value-type",
             "value type " + std::to_string(type) +
                 " is not a GGUF value type (0-12)",
             typeAt);
      return failed();
    }
    Value v;
    uint64_t valueAt = c.pos();
    if (!readValue(c, static_cast<ValueType>(type), v, arrayBudget))
      return failed();
    if (key == kAlignmentKey) {
      if (v.type != ValueType::U32) {
        c.fail("alignment-type",
               std::string("general.alignment must be u32, not ") +
                   valueTypeName(v.type),
               typeAt);
        return failed();
      }
      if (v.u == 0 || (v.u & (v.u - 1)) != 0) {
        c.fail("alignment-value",
               "general.alignment " + std::to_string(v.u) +
                   " is not a non-zero power of two",
               valueAt);
        return failed();
      }
      Alignment = static_cast<size_t>(v.u);
    }
    KeyIndex.emplace(key, Metadata.size());
    Metadata.emplace_back(std::move(key), std::move(v));
  }

  // --- Tensor infos -----------------------------------------------------
  Tensors.reserve(static_cast<size_t>(nTensors));
  for (uint64_t t = 0; t < nTensors; ++t) {
    c.Ctx.clear();
    TensorInfo ti;
    uint64_t nameAt = c.pos();
    if (!c.readString(ti.name, "tensor name"))
      return failed();
    c.Ctx = describe("tensor", printable(ti.name));
    if (ti.name.size() > kMaxTensorNameLength) {
      c.fail("tensor-name-length",
             "tensor name of " + std::to_string(ti.name.size()) +
                 " bytes exceeds ggml's limit of 63",
             nameAt);
      return failed();
    }
    if (TensorIndex.count(ti.name)) {
      c.fail("duplicate-tensor", "tensor name appears twice", nameAt);
      return failed();
    }
    uint64_t dimsAt = c.pos();
    if (!c.read(ti.nDims, "n_dims"))
      return failed();
    if (ti.nDims < 1 || ti.nDims > kMaxDims) {
      c.fail("n-dims",
             "n_dims " + std::to_string(ti.nDims) + " is not in 1..4", dimsAt);
      return failed();
    }
    // The element count is checked with every zero dim counted as one, so
    // that a product which wraps to zero (or one hidden behind a zero dim)
    // is still caught as an overflow.
    uint64_t boundedProduct = 1;
    for (uint32_t d = 0; d < ti.nDims; ++d) {
      uint64_t dimAt = c.pos();
      if (!c.read(ti.ne[d], "a dimension"))
        return failed();
      if (ti.ne[d] < 0) {
        c.fail("negative-dim",
               "dimension " + std::to_string(d) + " is " +
                   std::to_string(ti.ne[d]),
               dimAt);
        return failed();
      }
      uint64_t dim = ti.ne[d] == 0 ? 1 : static_cast<uint64_t>(ti.ne[d]);
      if (mulOverflow(boundedProduct, dim, boundedProduct) ||
          boundedProduct > static_cast<uint64_t>(
                               std::numeric_limits<int64_t>::max())) {
        c.fail("size-overflow",
               "element count overflows int64 at dimension " +
                   std::to_string(d),
               dimAt);
        return failed();
      }
    }
    uint64_t typeAt = c.pos();
    if (!c.read(ti.ggmlType, "tensor type"))
      return failed();
    if (isRemovedGgmlType(ti.ggmlType)) {
      c.fail("removed-type",
             "tensor type " + std::to_string(ti.ggmlType) +
                 " was removed from ggml",
             typeAt);
      return failed();
    }
    ti.format = lookupTensorType(ti.ggmlType);
    if (!ti.format) {
      c.fail("unknown-type",
             "tensor type " + std::to_string(ti.ggmlType) + " is not known",
             typeAt);
      return failed();
    }
    if (static_cast<uint64_t>(ti.ne[0]) % ti.format->blockElems != 0) {
      c.fail("block-size",
             "ne[0] = " + std::to_string(ti.ne[0]) +
                 " is not a multiple of the " + std::string(ti.format->name) +
                 " block length " + std::to_string(ti.format->blockElems),
             dimsAt);
      return failed();
    }
    // Row bytes times the outer dims; the bounded product above guarantees
    // the element count fits, but bytes per block may still overflow.
    uint64_t bytes = static_cast<uint64_t>(ti.ne[0]) / ti.format->blockElems;
    bool overflow = mulOverflow(bytes, ti.format->blockBytes, bytes);
    for (uint32_t d = 1; d < ti.nDims && !overflow; ++d)
      overflow = mulOverflow(bytes, static_cast<uint64_t>(ti.ne[d]), bytes);
    if (overflow ||
        bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      c.fail("size-overflow", "tensor byte size overflows", dimsAt);
      return failed();
    }
    ti.nbytes = bytes;
    uint64_t offAt = c.pos();
    if (!c.read(ti.offset, "tensor offset"))
      return failed();
    if (ti.offset % Alignment != 0) {
      c.fail("offset-alignment",
             "offset " + std::to_string(ti.offset) +
                 " is not a multiple of the alignment " +
                 std::to_string(Alignment),
             offAt);
      return failed();
    }
    if (!Tensors.empty()) {
      const TensorInfo &prev = Tensors.back();
      if (ti.offset < prev.offset) {
        c.fail("offset-order",
               "offset " + std::to_string(ti.offset) +
                   " is before the previous tensor's " +
                   std::to_string(prev.offset),
               offAt);
        return failed();
      }
      // prev.offset + prev.nbytes was checked against the file size below,
      // so it cannot overflow.
      if (ti.offset < prev.offset + prev.nbytes) {
        c.fail("tensor-overlap",
               "offset " + std::to_string(ti.offset) + " overlaps '" +
                   printable(prev.name) + "' ending at " +
                   std::to_string(prev.offset + prev.nbytes),
               offAt);
        return failed();
      }
    }
    // The data section starts after the tensor infos, which we have not
    // finished reading; checking against the file size here (with the
    // final data offset re-checked below) keeps the sums overflow-free.
    uint64_t padded, end;
    if (!alignUp(ti.nbytes, Alignment, padded) ||
        addOverflow(ti.offset, padded, end) || end > Size) {
      c.fail("data-bounds",
             "tensor data (offset " + std::to_string(ti.offset) + ", " +
                 std::to_string(ti.nbytes) +
                 " bytes with padding) extends past the end of the file (" +
                 std::to_string(Size) + " bytes)",
             offAt);
      return failed();
    }
    TensorIndex.emplace(ti.name, Tensors.size());
    Tensors.push_back(std::move(ti));
  }
  c.Ctx.clear();

  // --- Data section -----------------------------------------------------
  uint64_t infosEnd = c.pos();
  if (!alignUp(infosEnd, Alignment, DataOffset)) {
    c.fail("data-bounds", "data section offset overflows", infosEnd);
    return failed();
  }
  if (!Tensors.empty() && DataOffset > Size) {
    c.fail("truncated",
           "file ends before the data section (offset " +
               std::to_string(DataOffset) + ")",
           infosEnd);
    return failed();
  }
  for (TensorInfo &ti : Tensors) {
    uint64_t padded = 0, end = 0;
    bool ok = alignUp(ti.nbytes, Alignment, padded) &&
              !addOverflow(DataOffset, ti.offset, end) &&
              !addOverflow(end, padded, end) && end <= Size;
    if (!ok) {
      c.Ctx = describe("tensor", printable(ti.name));
      c.fail("data-bounds",
             "data_offset " + std::to_string(DataOffset) + " + offset " +
                 std::to_string(ti.offset) + " + " +
                 std::to_string(padded) + " padded bytes exceeds the file size " +
                 std::to_string(Size),
             DataOffset + ti.offset);
      return failed();
    }
    ti.data = Base + DataOffset + ti.offset;
  }
  return true;
}

} // namespace qcc::gguf
