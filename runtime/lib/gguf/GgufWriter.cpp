//===- GgufWriter.cpp - Atomic GGUF v3 writer -----------------------------===//
//
// Serializes metadata and tensors as GGUF v3. The writer validates with the
// reader's rules first (so it never produces a file qcc would reject), then
// streams through AtomicFile: a temporary in the destination directory,
// fsync, rename, fsync of the directory. A failure at any point leaves no
// partial destination and no temporary behind.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/Gguf.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <sys/stat.h>
#include <unistd.h>

namespace qcc::gguf {

//===----------------------------------------------------------------------===//
// AtomicFile
//===----------------------------------------------------------------------===//

static std::string errnoText(const std::string &what, const std::string &path) {
  return what + " '" + path + "': " + std::strerror(errno);
}

static std::string dirOf(const std::string &path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos)
    return ".";
  if (slash == 0)
    return "/";
  return path.substr(0, slash);
}

AtomicFile::~AtomicFile() { abort(); }

void AtomicFile::abort() {
  if (Fd >= 0) {
    ::close(Fd);
    Fd = -1;
  }
  if (!TempPath.empty()) {
    ::unlink(TempPath.c_str());
    TempPath.clear();
  }
  Buffer.clear();
}

bool AtomicFile::open(const std::string &path, std::string *error) {
  abort();
  Path = path;
  // A directory at the destination would make rename() fail only at the end;
  // refusing early avoids writing gigabytes for nothing.
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    if (error)
      *error = "cannot write '" + path + "': it is a directory";
    return false;
  }
  std::string dir = dirOf(path);
  size_t slash = path.rfind('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  // The temporary lives next to the destination so rename() stays within
  // one file system and is atomic.
  std::string tmpl = dir + "/." + base + ".tmp-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  int fd = ::mkostemp(buf.data(), O_CLOEXEC);
  if (fd < 0) {
    if (error)
      *error = errnoText("cannot create a temporary file in", dir);
    return false;
  }
  Fd = fd;
  TempPath.assign(buf.data());
  // mkstemp creates 0600; give the result the permissions a plain create
  // would have had (0666 minus the umask).
  mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(Fd, 0666 & ~mask);
  Buffer.reserve(1 << 20);
  return true;
}

bool AtomicFile::flush(std::string *error) {
  size_t done = 0;
  while (done < Buffer.size()) {
    ssize_t n = ::write(Fd, Buffer.data() + done, Buffer.size() - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (error)
        *error = errnoText("cannot write", TempPath);
      return false;
    }
    done += static_cast<size_t>(n);
  }
  Buffer.clear();
  return true;
}

bool AtomicFile::write(const void *data, size_t size, std::string *error) {
  if (Fd < 0) {
    if (error)
      *error = "write to a file that is not open";
    return false;
  }
  const uint8_t *p = static_cast<const uint8_t *>(data);
  // Small pieces (headers, padding) are batched; big tensor payloads go
  // straight to write() once the buffer is drained.
  if (size < (1u << 16)) {
    Buffer.insert(Buffer.end(), p, p + size);
    if (Buffer.size() >= (1u << 20))
      return flush(error);
    return true;
  }
  if (!flush(error))
    return false;
  size_t done = 0;
  while (done < size) {
    size_t chunk = size - done < (1u << 30) ? size - done : (1u << 30);
    ssize_t n = ::write(Fd, p + done, chunk);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (error)
        *error = errnoText("cannot write", TempPath);
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

bool AtomicFile::commit(std::string *error,
                        const std::function<void()> &beforeRename) {
  if (Fd < 0) {
    if (error)
      *error = "commit of a file that is not open";
    return false;
  }
  if (!flush(error)) {
    abort();
    return false;
  }
  if (::fsync(Fd) != 0) {
    if (error)
      *error = errnoText("cannot fsync", TempPath);
    abort();
    return false;
  }
  if (::close(Fd) != 0) {
    Fd = -1;
    if (error)
      *error = errnoText("cannot close", TempPath);
    abort();
    return false;
  }
  Fd = -1;
  if (beforeRename)
    beforeRename();
  if (::rename(TempPath.c_str(), Path.c_str()) != 0) {
    if (error)
      *error = errnoText("cannot rename the temporary onto", Path);
    abort();
    return false;
  }
  TempPath.clear();
  // Persist the directory entry too, or a crash could lose the rename.
  int dfd = ::open(dirOf(Path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return true;
}

//===----------------------------------------------------------------------===//
// Writer
//===----------------------------------------------------------------------===//

Writer Writer::fromFile(const File &file) {
  Writer w;
  w.Metadata = file.metadata();
  for (const TensorInfo &ti : file.tensors()) {
    std::vector<int64_t> dims(ti.ne, ti.ne + ti.nDims);
    w.addTensor(ti.name, ti.ggmlType, dims, ti.data,
                static_cast<size_t>(ti.nbytes));
  }
  w.protect(file);
  return w;
}

void Writer::protect(const File &file) {
  if (file.inode() != 0)
    Sources.emplace_back(file.device(), file.inode());
}

void Writer::set(const std::string &key, Value value) {
  for (auto &kv : Metadata)
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  Metadata.emplace_back(key, std::move(value));
}

bool Writer::remove(std::string_view key) {
  for (auto it = Metadata.begin(); it != Metadata.end(); ++it)
    if (it->first == key) {
      Metadata.erase(it);
      return true;
    }
  return false;
}

const Value *Writer::find(std::string_view key) const {
  for (const auto &kv : Metadata)
    if (kv.first == key)
      return &kv.second;
  return nullptr;
}

void Writer::setAlignment(uint32_t alignment) {
  set(kAlignmentKey, Value::makeU32(alignment));
}

void Writer::addTensor(std::string name, uint32_t ggmlType,
                       const std::vector<int64_t> &dims, const void *data,
                       size_t nbytes) {
  Tensors.push_back({std::move(name), ggmlType, dims,
                     static_cast<const uint8_t *>(data), nbytes, nullptr});
}

void Writer::addTensor(std::string name, uint32_t ggmlType,
                       const std::vector<int64_t> &dims,
                       std::vector<uint8_t> bytes) {
  auto owned = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  Tensors.push_back(
      {std::move(name), ggmlType, dims, owned->data(), owned->size(), owned});
}

bool Writer::replaceTensor(std::string_view name, uint32_t ggmlType,
                           std::vector<uint8_t> bytes) {
  for (PendingTensor &t : Tensors)
    if (t.name == name) {
      t.owned = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
      t.ggmlType = ggmlType;
      t.data = t.owned->data();
      t.nbytes = t.owned->size();
      return true;
    }
  return false;
}

static bool setErr(std::string *error, const std::string &msg) {
  if (error)
    *error = msg;
  return false;
}

bool Writer::validate(size_t &alignment, std::string *error) const {
  alignment = kDefaultAlignment;
  for (size_t k = 0; k < Metadata.size(); ++k) {
    const std::string &key = Metadata[k].first;
    const Value &v = Metadata[k].second;
    if (key.empty())
      return setErr(error, "rule empty-key: metadata key is empty");
    for (size_t j = 0; j < k; ++j)
      if (Metadata[j].first == key)
        return setErr(error, "rule duplicate-key: key '" + key + "' twice");
    if (static_cast<uint32_t>(v.type) > 12)
      return setErr(error, "rule value-type: bad value type for '" + key + "'");
    if (v.type == ValueType::Array) {
      if (v.elemType == ValueType::Array ||
          static_cast<uint32_t>(v.elemType) > 12)
        return setErr(error,
                      "rule nested-array: bad array element type for '" +
                          key + "'");
      bool isString = v.elemType == ValueType::String;
      size_t size = valueTypeSize(v.elemType);
      if ((isString && !v.packed.empty()) ||
          (!isString && (!v.strings.empty() || v.packed.size() % size)))
        return setErr(error, "array '" + key +
                                 "' has an element of the wrong type");
      if (v.elemType == ValueType::Bool)
        for (uint8_t x : v.packed)
          if (x > 1)
            return setErr(error, "array '" + key + "' has a bool that is "
                                 "not 0 or 1");
    }
    if (key == kAlignmentKey) {
      if (v.type != ValueType::U32)
        return setErr(error, "rule alignment-type: general.alignment must "
                             "be u32");
      if (v.u == 0 || (v.u & (v.u - 1)) != 0 || v.u > 0xffffffffu)
        return setErr(error, "rule alignment-value: general.alignment " +
                                 std::to_string(v.u) +
                                 " is not a power of two");
      alignment = static_cast<size_t>(v.u);
    }
  }
  for (size_t k = 0; k < Tensors.size(); ++k) {
    const PendingTensor &t = Tensors[k];
    std::string ctx = " (tensor '" + t.name + "')";
    if (t.name.size() > kMaxTensorNameLength)
      return setErr(error, "rule tensor-name-length: name longer than 63 "
                           "bytes" + ctx);
    for (size_t j = 0; j < k; ++j)
      if (Tensors[j].name == t.name)
        return setErr(error, "rule duplicate-tensor: name appears twice" + ctx);
    if (t.dims.empty() || t.dims.size() > kMaxDims)
      return setErr(error, "rule n-dims: n_dims not in 1..4" + ctx);
    const FormatInfo *info = lookupTensorType(t.ggmlType);
    if (!info)
      return setErr(error, "rule unknown-type: tensor type " +
                               std::to_string(t.ggmlType) + ctx);
    uint64_t elems = 1;
    for (int64_t d : t.dims) {
      if (d < 0)
        return setErr(error, "rule negative-dim: negative dimension" + ctx);
      if (__builtin_mul_overflow(elems, static_cast<uint64_t>(d ? d : 1),
                                 &elems) ||
          elems > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return setErr(error, "rule size-overflow: element count" + ctx);
    }
    if (static_cast<uint64_t>(t.dims[0]) % info->blockElems != 0)
      return setErr(error, "rule block-size: ne[0] not a multiple of " +
                               std::to_string(info->blockElems) + ctx);
    uint64_t bytes =
        static_cast<uint64_t>(t.dims[0]) / info->blockElems * info->blockBytes;
    for (size_t d = 1; d < t.dims.size(); ++d)
      if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(t.dims[d]),
                                 &bytes))
        return setErr(error, "rule size-overflow: byte size" + ctx);
    if (bytes != t.nbytes)
      return setErr(error, "tensor data is " + std::to_string(t.nbytes) +
                               " bytes but its type and shape need " +
                               std::to_string(bytes) + ctx);
    if (t.nbytes && !t.data)
      return setErr(error, "tensor has no data" + ctx);
  }
  return true;
}

namespace {
/// Appends little-endian scalars and GGUF strings to a sink.
template <typename Sink> struct Emitter {
  Sink &S;
  std::string *Error;
  uint64_t Pos = 0;
  bool Ok = true;

  void raw(const void *p, size_t n) {
    if (Ok && !S.write(p, n, Error))
      Ok = false;
    Pos += n;
  }
  template <typename T> void pod(T x) { raw(&x, sizeof x); }
  void str(const std::string &s) {
    pod<uint64_t>(s.size());
    raw(s.data(), s.size());
  }
  void pad(size_t alignment) {
    static const uint8_t zeros[256] = {};
    uint64_t want = (alignment - Pos % alignment) % alignment;
    while (want) {
      size_t n = want < sizeof zeros ? want : sizeof zeros;
      raw(zeros, n);
      want -= n;
    }
  }
  void scalar(const Value &v, ValueType type) {
    switch (type) {
    case ValueType::U8: pod<uint8_t>(static_cast<uint8_t>(v.u)); break;
    case ValueType::I8: pod<int8_t>(static_cast<int8_t>(v.i)); break;
    case ValueType::U16: pod<uint16_t>(static_cast<uint16_t>(v.u)); break;
    case ValueType::I16: pod<int16_t>(static_cast<int16_t>(v.i)); break;
    case ValueType::U32: pod<uint32_t>(static_cast<uint32_t>(v.u)); break;
    case ValueType::I32: pod<int32_t>(static_cast<int32_t>(v.i)); break;
    case ValueType::U64: pod<uint64_t>(v.u); break;
    case ValueType::I64: pod<int64_t>(v.i); break;
    case ValueType::F32: pod<float>(v.f32); break;
    case ValueType::F64: pod<double>(v.f64); break;
    case ValueType::Bool: pod<uint8_t>(v.b ? 1 : 0); break;
    case ValueType::String: str(v.str); break;
    case ValueType::Array: break; // rejected by validate()
    }
  }
};

struct MemorySink {
  std::vector<uint8_t> &Out;
  bool write(const void *p, size_t n, std::string *) {
    const uint8_t *b = static_cast<const uint8_t *>(p);
    Out.insert(Out.end(), b, b + n);
    return true;
  }
};
} // namespace

template <typename Sink>
bool Writer::emit(Sink &sink, std::string *error) const {
  size_t alignment;
  if (!validate(alignment, error))
    return false;
  Emitter<Sink> e{sink, error};
  e.raw("GGUF", 4);
  e.template pod<uint32_t>(3);
  e.template pod<uint64_t>(Tensors.size());
  e.template pod<uint64_t>(Metadata.size());
  for (const auto &kv : Metadata) {
    e.str(kv.first);
    e.template pod<uint32_t>(static_cast<uint32_t>(kv.second.type));
    if (kv.second.type == ValueType::Array) {
      e.template pod<uint32_t>(static_cast<uint32_t>(kv.second.elemType));
      e.template pod<uint64_t>(kv.second.arraySize());
      for (const std::string &s : kv.second.strings)
        e.str(s);
      if (!kv.second.packed.empty())
        e.raw(kv.second.packed.data(), kv.second.packed.size());
    } else {
      e.scalar(kv.second, kv.second.type);
    }
  }
  // Offsets: each tensor starts at the next multiple of the alignment.
  uint64_t offset = 0;
  for (const PendingTensor &t : Tensors) {
    e.str(t.name);
    e.template pod<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims)
      e.template pod<int64_t>(d);
    e.template pod<uint32_t>(t.ggmlType);
    e.template pod<uint64_t>(offset);
    offset += (t.nbytes + alignment - 1) / alignment * alignment;
  }
  // Without tensors there is no data section to align; padding anyway
  // would write up to 2 GiB of zeros for a large general.alignment.
  if (!Tensors.empty())
    e.pad(alignment);
  for (const PendingTensor &t : Tensors) {
    e.raw(t.data, t.nbytes);
    e.pad(alignment);
  }
  return e.Ok;
}

bool Writer::writeToMemory(std::vector<uint8_t> &out,
                           std::string *error) const {
  out.clear();
  MemorySink sink{out};
  return emit(sink, error);
}

bool Writer::write(const std::string &path, std::string *error,
                   const std::function<void()> &beforeRename) const {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0)
    for (const auto &src : Sources)
      if (src.first == static_cast<uint64_t>(st.st_dev) &&
          src.second == static_cast<uint64_t>(st.st_ino))
        return setErr(error, "refusing to replace '" + path +
                                 "': it is an input of this write");
  size_t alignment;
  if (!validate(alignment, error))
    return false;
  AtomicFile file;
  if (!file.open(path, error))
    return false;
  if (!emit(file, error)) {
    file.abort();
    return false;
  }
  return file.commit(error, beforeRename);
}

} // namespace qcc::gguf
