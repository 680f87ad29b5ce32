//===- Gguf.h - GGUF file reader and writer (no MLIR dependency) ----------===//
//
// A strict reader for GGUF v2/v3 files (mmap, zero-copy tensor data) and an
// atomic writer. The reader enforces every structural rule of the format and
// reports the first broken one as a single line naming the rule, the file
// offset and the key or tensor involved, so that a malformed or hostile file
// can never make a caller read out of bounds or allocate unbounded memory.
//
// Type ids and block sizes come from Formats.def (through Formats.h); this
// header only adds the plain storage types (i8..i64, f64) GGUF also allows.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_RUNTIME_GGUF_H
#define QCC_RUNTIME_GGUF_H

#include "qcc/Runtime/Formats.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace qcc::gguf {

/// Metadata value types, numbered as GGUF stores them.
enum class ValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

/// "u8", "string", ...; "?" for ids outside the enum.
const char *valueTypeName(ValueType type);

/// Bytes one value of a fixed-size type occupies in a file, 0 for String and
/// Array (whose size depends on their contents).
size_t valueTypeSize(ValueType type);

/// One metadata value. Scalars live in the field matching their type (the
/// others stay zero); F32 keeps its own float so that every bit pattern,
/// NaN payloads included, round-trips exactly.
struct Value {
  ValueType type = ValueType::U8;
  uint64_t u = 0;    ///< U8, U16, U32, U64
  int64_t i = 0;     ///< I8, I16, I32, I64
  float f32 = 0;     ///< F32
  double f64 = 0;    ///< F64
  bool b = false;    ///< Bool
  std::string str;   ///< String
  ValueType elemType = ValueType::U8; ///< Array: the element type
  /// Array of a fixed-size type: the elements packed as a GGUF file stores
  /// them (valueTypeSize(elemType) little-endian bytes each, bools 0 or 1).
  /// A vocabulary's scores and token types take 4 bytes per entry this way,
  /// not a whole Value each.
  std::vector<uint8_t> packed;
  std::vector<std::string> strings; ///< Array of String: the elements

  static Value makeU8(uint8_t v);
  static Value makeI8(int8_t v);
  static Value makeU16(uint16_t v);
  static Value makeI16(int16_t v);
  static Value makeU32(uint32_t v);
  static Value makeI32(int32_t v);
  static Value makeU64(uint64_t v);
  static Value makeI64(int64_t v);
  static Value makeF32(float v);
  static Value makeF64(double v);
  static Value makeBool(bool v);
  static Value makeString(std::string v);
  /// An array; every element must have type `elemType` (not Array).
  static Value makeArray(ValueType elemType, const std::vector<Value> &elems);

  /// Array: the number of elements.
  size_t arraySize() const;
  /// Array: element `k` (< arraySize()) as a scalar Value.
  Value element(size_t k) const;

  /// The value of an integer-typed scalar as uint64 (false for other types
  /// and for negative signed values).
  bool asUInt(uint64_t &out) const;

  /// Exact equality: same type, same bits (floats compared bitwise).
  bool operator==(const Value &other) const;
  bool operator!=(const Value &other) const { return !(*this == other); }

  /// Short human-readable rendering; arrays longer than `maxElems` are
  /// abbreviated ("[1, 2, 3, ... (1000 more)]").
  std::string toString(size_t maxElems = 8) const;
};

/// Facts of a GGUF tensor type id: the quantization formats of Formats.def
/// plus the storage types (I8, I16, I32, I64, F64). nullptr for unknown or
/// removed ids. For storage types `format` holds the raw id (not a Format
/// enumerator), so code must not pass it to the codecs.
const FormatInfo *lookupTensorType(uint32_t ggmlId);
/// By ggml name ("q4_K", "i32"), or nullptr.
const FormatInfo *lookupTensorType(std::string_view name);
/// Whether the id is one of the storage types (not a codec format).
bool isStorageType(uint32_t ggmlId);

/// GGML's name limit: names are stored in char[64] with a terminating NUL.
constexpr size_t kMaxTensorNameLength = 63;
constexpr size_t kMaxDims = 4;
constexpr size_t kDefaultAlignment = 32;
constexpr const char *kAlignmentKey = "general.alignment";
/// Most array elements (all arrays together) one file may hold: this bounds
/// the reader's memory per input byte (a string element costs a
/// std::string even when it is empty in the file).
constexpr uint64_t kMaxArrayElements = uint64_t(1) << 24;

struct TensorInfo {
  std::string name;
  uint32_t ggmlType = 0;
  uint32_t nDims = 0;
  int64_t ne[4] = {1, 1, 1, 1}; ///< ggml order: ne[0] is the contiguous dim
  uint64_t offset = 0;          ///< relative to the data section
  uint64_t nbytes = 0;
  const uint8_t *data = nullptr; ///< zero-copy into the file's mapping
  const FormatInfo *format = nullptr;

  /// Product of the dims (validated not to overflow by the reader).
  uint64_t numElements() const;
};

/// A parsed, validated GGUF file. Read-only: the file is mapped with
/// PROT_READ / MAP_PRIVATE and never written.
class File {
public:
  /// Maps and validates `path`. On any broken rule returns nullptr and sets
  /// `*error` (when non-null) to one line naming the rule, offset and key.
  static std::unique_ptr<File> open(const std::string &path,
                                    std::string *error);

  /// Validates `size` bytes at `data` without copying them: the caller keeps
  /// the buffer alive (and unchanged) as long as the File. Used by the fuzzer
  /// and by tests that craft files in memory.
  static std::unique_ptr<File> openMemory(const uint8_t *data, size_t size,
                                          std::string *error);

  ~File();
  File(const File &) = delete;
  File &operator=(const File &) = delete;

  uint32_t version() const { return Version; }
  /// Whether the bytes are a read-only file mapping (open), not the
  /// caller's buffer (openMemory).
  bool mapped() const { return Mapped; }
  size_t alignment() const { return Alignment; }
  uint64_t dataOffset() const { return DataOffset; }
  uint64_t fileSize() const { return Size; }
  const uint8_t *bytes() const { return Base; }

  const std::vector<std::pair<std::string, Value>> &metadata() const {
    return Metadata;
  }
  const Value *find(std::string_view key) const;

  const std::vector<TensorInfo> &tensors() const { return Tensors; }
  const TensorInfo *findTensor(std::string_view name) const;

  /// Device and inode of the mapped file (0/0 for openMemory), so writers
  /// can refuse to replace an input they are still reading from.
  uint64_t device() const { return Dev; }
  uint64_t inode() const { return Ino; }

private:
  File() = default;
  bool parse(std::string *error);

  const uint8_t *Base = nullptr;
  uint64_t Size = 0;
  bool Mapped = false;
  uint64_t Dev = 0, Ino = 0;
  uint32_t Version = 0;
  size_t Alignment = kDefaultAlignment;
  uint64_t DataOffset = 0;
  std::vector<std::pair<std::string, Value>> Metadata;
  std::unordered_map<std::string, size_t> KeyIndex;
  std::vector<TensorInfo> Tensors;
  std::unordered_map<std::string, size_t> TensorIndex;
};

/// A file written through a temporary in the destination directory: on
/// commit() the data is fsynced, renamed over `path` and the directory is
/// fsynced; if commit() is never reached (or fails) the temporary is removed
/// and an existing destination is left untouched.
class AtomicFile {
public:
  AtomicFile() = default;
  ~AtomicFile();
  AtomicFile(const AtomicFile &) = delete;
  AtomicFile &operator=(const AtomicFile &) = delete;

  bool open(const std::string &path, std::string *error);
  bool write(const void *data, size_t size, std::string *error);
  /// `beforeRename`, when set, runs once the temporary is complete and
  /// fsynced, just before it replaces the destination (tests use it to kill
  /// a writer at the worst moment).
  bool commit(std::string *error,
              const std::function<void()> &beforeRename = {});
  /// Removes the temporary without touching the destination.
  void abort();

private:
  bool flush(std::string *error);
  std::string Path, TempPath;
  int Fd = -1;
  std::vector<uint8_t> Buffer;
};

/// Builds a GGUF v3 file. Tensor data is referenced, not copied, unless
/// given as an owning vector; referenced memory must outlive write().
class Writer {
public:
  Writer() = default;

  /// Copies metadata and tensor references of `file`; the File must stay
  /// open until write() returns. write() refuses to replace `file` itself.
  static Writer fromFile(const File &file);

  /// Sets (or replaces, keeping its position) a metadata key.
  void set(const std::string &key, Value value);
  bool remove(std::string_view key);
  const Value *find(std::string_view key) const;
  const std::vector<std::pair<std::string, Value>> &metadata() const {
    return Metadata;
  }

  /// Sets general.alignment (u32). The alignment used for tensor data is
  /// general.alignment when present, else 32.
  void setAlignment(uint32_t alignment);

  /// Adds a tensor; `dims` in ggml order (dims[0] contiguous). `nbytes`
  /// must equal the size the type and dims imply (checked by write()).
  void addTensor(std::string name, uint32_t ggmlType,
                 const std::vector<int64_t> &dims, const void *data,
                 size_t nbytes);
  void addTensor(std::string name, uint32_t ggmlType,
                 const std::vector<int64_t> &dims, std::vector<uint8_t> bytes);
  /// Replaces the type/data of an existing tensor (same name, same dims).
  bool replaceTensor(std::string_view name, uint32_t ggmlType,
                     std::vector<uint8_t> bytes);

  size_t numTensors() const { return Tensors.size(); }

  /// Makes write() refuse to replace `file` (as for the source of
  /// fromFile()), e.g. the model a checkpoint or adapter is derived from.
  void protect(const File &file);

  /// Validates everything (same rules as the reader) and writes atomically;
  /// `beforeRename` as for AtomicFile::commit().
  bool write(const std::string &path, std::string *error,
             const std::function<void()> &beforeRename = {}) const;

  /// Serializes to memory (same validation); used by tests and the fuzzer's
  /// seed generation.
  bool writeToMemory(std::vector<uint8_t> &out, std::string *error) const;

private:
  struct PendingTensor {
    std::string name;
    uint32_t ggmlType;
    std::vector<int64_t> dims;
    const uint8_t *data;
    size_t nbytes;
    std::shared_ptr<std::vector<uint8_t>> owned;
  };
  template <typename Sink>
  bool emit(Sink &sink, std::string *error) const;
  bool validate(size_t &alignment, std::string *error) const;

  std::vector<std::pair<std::string, Value>> Metadata;
  std::vector<PendingTensor> Tensors;
  std::vector<std::pair<uint64_t, uint64_t>> Sources; ///< (dev, inode)
};

} // namespace qcc::gguf

#endif // QCC_RUNTIME_GGUF_H
