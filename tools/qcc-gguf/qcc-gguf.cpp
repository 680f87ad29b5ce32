//===- qcc-gguf.cpp - Inspect, verify, dequantize and quantize GGUF -------===//
//
//   qcc-gguf info FILE [--json]
//   qcc-gguf verify FILE
//   qcc-gguf dequant FILE TENSOR -o OUT.f32
//   qcc-gguf quantize IN.gguf OUT.gguf [--type TYPE [--tensors REGEX]]
//                     [--tensor-type REGEX=TYPE]... [--types-from REF.gguf]
//                     [--imatrix FILE]
//   qcc-gguf imatrix --model M --data F [--ctx N] -o IMATRIX.gguf
//   qcc-gguf rotate IN.gguf OUT.gguf [--seed S]
//
// Exit codes: 0 success, 1 invalid input or failed operation (one line on
// stderr), 2 usage error. Every output file is written atomically. See
// docs/qcc-gguf.md.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/Codecs.h"
#include "qcc/Runtime/Gguf.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <sys/stat.h>
#include <unistd.h>

using namespace qcc;
using namespace qcc::gguf;

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFail = 1;
constexpr int kExitUsage = 2;

const char *kUsage =
    "usage: qcc-gguf info FILE [--json]\n"
    "       qcc-gguf verify FILE\n"
    "       qcc-gguf dequant FILE TENSOR -o OUT.f32\n"
    "       qcc-gguf quantize IN.gguf OUT.gguf [--type TYPE [--tensors REGEX]]"
    "\n                         [--tensor-type REGEX=TYPE]..."
    " [--types-from REF.gguf] [--imatrix FILE]\n"
    "       qcc-gguf imatrix --model M --data F [--ctx N] [--chunks K]"
    " -o IMATRIX.gguf\n"
    "       qcc-gguf rotate IN.gguf OUT.gguf [--seed S]\n";

int usage(const std::string &msg) {
  if (!msg.empty())
    std::cerr << "qcc-gguf: " << msg << "\n";
  std::cerr << kUsage;
  return kExitUsage;
}

int fail(const std::string &msg) {
  // Exactly one line: collapse any newline a message might carry.
  std::string line = msg;
  for (char &c : line)
    if (c == '\n' || c == '\r')
      c = ' ';
  std::cerr << "qcc-gguf: " << line << "\n";
  return kExitFail;
}

std::unique_ptr<File> openOrReport(const std::string &path, int &rc) {
  std::string err;
  auto file = File::open(path, &err);
  if (!file)
    rc = fail(path + ": " + err);
  return file;
}

std::string typeName(uint32_t id) {
  const FormatInfo *info = lookupTensorType(id);
  return info ? std::string(info->name) : "type" + std::to_string(id);
}

//===----------------------------------------------------------------------===//
// info
//===----------------------------------------------------------------------===//

nlohmann::json toJson(const Value &v) {
  switch (v.type) {
  case ValueType::U8:
  case ValueType::U16:
  case ValueType::U32:
  case ValueType::U64:
    return v.u;
  case ValueType::I8:
  case ValueType::I16:
  case ValueType::I32:
  case ValueType::I64:
    return v.i;
  case ValueType::F32:
    return static_cast<double>(v.f32); // non-finite values dump as null
  case ValueType::F64:
    return v.f64;
  case ValueType::Bool:
    return v.b;
  case ValueType::String:
    return v.str;
  case ValueType::Array: {
    nlohmann::json arr = nlohmann::json::array();
    for (size_t k = 0; k < v.arraySize(); ++k)
      arr.push_back(toJson(v.element(k)));
    return arr;
  }
  }
  return nullptr;
}

std::string shapeString(const TensorInfo &t) {
  std::string s = "[";
  for (uint32_t d = 0; d < t.nDims; ++d)
    s += (d ? ", " : "") + std::to_string(t.ne[d]);
  return s + "]";
}

int cmdInfo(const std::vector<std::string> &args) {
  std::string path;
  bool json = false;
  for (const std::string &a : args) {
    if (a == "--json")
      json = true;
    else if (!a.empty() && a[0] == '-')
      return usage("info: unknown option '" + a + "'");
    else if (path.empty())
      path = a;
    else
      return usage("info: more than one FILE");
  }
  if (path.empty())
    return usage("info: missing FILE");
  int rc = kExitOk;
  auto file = openOrReport(path, rc);
  if (!file)
    return rc;

  if (json) {
    nlohmann::json j;
    j["file"] = path;
    j["version"] = file->version();
    j["alignment"] = file->alignment();
    j["data_offset"] = file->dataOffset();
    j["file_size"] = file->fileSize();
    j["shape_order"] = "ggml ne order: ne[0] is the contiguous dimension";
    nlohmann::json meta = nlohmann::json::array();
    for (const auto &kv : file->metadata()) {
      nlohmann::json m;
      m["key"] = kv.first;
      m["type"] = valueTypeName(kv.second.type);
      if (kv.second.type == ValueType::Array)
        m["element_type"] = valueTypeName(kv.second.elemType);
      m["value"] = toJson(kv.second);
      meta.push_back(std::move(m));
    }
    j["metadata"] = std::move(meta);
    nlohmann::json tensors = nlohmann::json::array();
    for (const TensorInfo &t : file->tensors()) {
      nlohmann::json tj;
      tj["name"] = t.name;
      tj["type"] = typeName(t.ggmlType);
      tj["type_id"] = t.ggmlType;
      tj["ne"] = std::vector<int64_t>(t.ne, t.ne + t.nDims);
      tj["offset"] = t.offset;
      tj["file_offset"] = file->dataOffset() + t.offset;
      tj["nbytes"] = t.nbytes;
      tensors.push_back(std::move(tj));
    }
    j["tensors"] = std::move(tensors);
    // Strings from the file need not be UTF-8; replace rather than throw.
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n";
    return kExitOk;
  }

  std::cout << "file:        " << path << "\n"
            << "version:     " << file->version() << "\n"
            << "alignment:   " << file->alignment() << "\n"
            << "data offset: " << file->dataOffset()
            << (file->tensors().empty() ? " (no tensors, no data section)" : "")
            << "\n"
            << "file size:   " << file->fileSize() << "\n"
            << "metadata (" << file->metadata().size() << " keys):\n";
  for (const auto &kv : file->metadata()) {
    std::string type = valueTypeName(kv.second.type);
    if (kv.second.type == ValueType::Array)
      type += "<" + std::string(valueTypeName(kv.second.elemType)) + "> x" +
              std::to_string(kv.second.arraySize());
    std::cout << "  " << kv.first << " (" << type
              << ") = " << kv.second.toString(8) << "\n";
  }
  std::cout << "tensors (" << file->tensors().size()
            << "; shape in ggml ne order, ne[0] contiguous; offset relative "
               "to the data section):\n";
  for (const TensorInfo &t : file->tensors())
    std::cout << "  " << t.name << "  " << typeName(t.ggmlType) << "  "
              << shapeString(t) << "  offset " << t.offset << "  "
              << t.nbytes << " bytes\n";
  return kExitOk;
}

//===----------------------------------------------------------------------===//
// verify
//===----------------------------------------------------------------------===//

int cmdVerify(const std::vector<std::string> &args) {
  if (args.size() != 1 || (!args[0].empty() && args[0][0] == '-'))
    return usage("verify: expected exactly one FILE");
  int rc = kExitOk;
  auto file = openOrReport(args[0], rc);
  if (!file)
    return rc;
  std::cout << "OK " << args[0] << ": GGUF v" << file->version() << ", "
            << file->metadata().size() << " keys, " << file->tensors().size()
            << " tensors, " << file->fileSize() << " bytes\n";
  return kExitOk;
}

//===----------------------------------------------------------------------===//
// Decoding to f32
//===----------------------------------------------------------------------===//


/// Decodes a whole tensor to f32 in ggml element order.
bool decodeTensor(const TensorInfo &t, std::vector<float> &out,
                  std::string *error) {
  size_t n = static_cast<size_t>(t.numElements());
  out.resize(n);
  const uint8_t *p = t.data;
  switch (t.ggmlType) {
  case 24: // i8
    for (size_t k = 0; k < n; ++k)
      out[k] = static_cast<int8_t>(p[k]);
    return true;
  case 25: // i16
    for (size_t k = 0; k < n; ++k) {
      int16_t x;
      std::memcpy(&x, p + 2 * k, 2);
      out[k] = x;
    }
    return true;
  case 26: // i32
    for (size_t k = 0; k < n; ++k) {
      int32_t x;
      std::memcpy(&x, p + 4 * k, 4);
      out[k] = static_cast<float>(x);
    }
    return true;
  case 27: // i64
    for (size_t k = 0; k < n; ++k) {
      int64_t x;
      std::memcpy(&x, p + 8 * k, 8);
      out[k] = static_cast<float>(x);
    }
    return true;
  case 28: // f64
    for (size_t k = 0; k < n; ++k) {
      double x;
      std::memcpy(&x, p + 8 * k, 8);
      out[k] = static_cast<float>(x);
    }
    return true;
  default:
    break;
  }
  (void)error;
  // Every other known type is a Formats.def format the codecs decode.
  decodeToF32(static_cast<Format>(t.ggmlType), p, out.data(), n);
  return true;
}

//===----------------------------------------------------------------------===//
// dequant
//===----------------------------------------------------------------------===//

int cmdDequant(const std::vector<std::string> &args) {
  std::vector<std::string> pos;
  std::string out;
  for (size_t k = 0; k < args.size(); ++k) {
    if (args[k] == "-o") {
      if (k + 1 >= args.size())
        return usage("dequant: -o needs a path");
      out = args[++k];
    } else if (!args[k].empty() && args[k][0] == '-')
      return usage("dequant: unknown option '" + args[k] + "'");
    else
      pos.push_back(args[k]);
  }
  if (pos.size() != 2 || out.empty())
    return usage("dequant: expected FILE TENSOR -o OUT.f32");
  int rc = kExitOk;
  auto file = openOrReport(pos[0], rc);
  if (!file)
    return rc;
  const TensorInfo *t = file->findTensor(pos[1]);
  if (!t)
    return fail(pos[0] + ": no tensor named '" + pos[1] + "'");
  std::vector<float> values;
  std::string err;
  if (!decodeTensor(*t, values, &err))
    return fail(err);
  AtomicFile f;
  if (!f.open(out, &err) ||
      !f.write(values.data(), values.size() * sizeof(float), &err) ||
      !f.commit(&err))
    return fail(err);
  std::cerr << "qcc-gguf: wrote " << values.size() << " f32 values of '"
            << t->name << "' (" << typeName(t->ggmlType) << ") to " << out
            << "\n";
  return kExitOk;
}

//===----------------------------------------------------------------------===//
// quantize
//===----------------------------------------------------------------------===//

/// llama.cpp's LLAMA_FTYPE for a file whose weights are all of one type (the
/// numbering of llama.h / gguf-py's LlamaFileType; for the k-quants the
/// "_M" mix, which is what llama.cpp reports for a pure file of that type).
std::optional<uint32_t> llamaFileType(Format f) {
  switch (f) {
  case Format::F32: return 0;
  case Format::F16: return 1;
  case Format::Q4_0: return 2;
  case Format::Q4_1: return 3;
  case Format::Q8_0: return 7;
  case Format::Q5_0: return 8;
  case Format::Q5_1: return 9;
  case Format::Q2_K: return 10;
  case Format::Q3_K: return 12; // Q3_K_M
  case Format::Q4_K: return 15; // Q4_K_M
  case Format::Q5_K: return 17; // Q5_K_M
  case Format::Q6_K: return 18;
  case Format::IQ2_XXS: return 19;
  case Format::IQ2_XS: return 20;
  case Format::IQ3_XXS: return 23;
  case Format::IQ1_S: return 24;
  case Format::IQ4_NL: return 25;
  case Format::IQ3_S: return 26;
  case Format::IQ2_S: return 28;
  case Format::IQ4_XS: return 30;
  case Format::IQ1_M: return 31;
  case Format::BF16: return 32;
  case Format::TQ1_0: return 36;
  case Format::TQ2_0: return 37;
  case Format::MXFP4: return 38; // MXFP4_MOE
  case Format::NVFP4: return 39;
  case Format::Q1_0: return 40;
  default: return std::nullopt; // q2_0: no llama.cpp ftype known
  }
}

/// Per-column importance of each weight from a llama.cpp imatrix GGUF:
/// `<w>.in_sum2` (f32, ne = [cols, nMat]) and `<w>.counts` (f32, ne =
/// [1, nMat]); importance = in_sum2 / counts, or 1 where a matrix saw no
/// input (as llama.cpp does).
struct Importance {
  int64_t cols = 0, nMat = 0;
  std::vector<float> values; // nMat rows of cols
};

bool loadImatrix(const std::string &path,
                 std::map<std::string, Importance> &out, std::string *error) {
  auto file = File::open(path, error);
  if (!file) {
    *error = "imatrix " + path + ": " + *error;
    return false;
  }
  const std::string suffix = ".in_sum2";
  for (const TensorInfo &t : file->tensors()) {
    if (t.name.size() <= suffix.size() ||
        t.name.compare(t.name.size() - suffix.size(), suffix.size(),
                       suffix) != 0)
      continue;
    std::string base = t.name.substr(0, t.name.size() - suffix.size());
    const TensorInfo *counts = file->findTensor(base + ".counts");
    if (!counts) {
      *error = "imatrix " + path + ": '" + t.name + "' has no '" + base +
               ".counts'";
      return false;
    }
    int64_t cols = t.ne[0], nMat = t.nDims >= 2 ? t.ne[1] : 1;
    if (t.ggmlType != 0 || counts->ggmlType != 0 || t.nDims > 2 ||
        counts->numElements() != static_cast<uint64_t>(nMat)) {
      *error = "imatrix " + path + ": '" + base +
               "' is not f32 in_sum2[cols, n_mat] with f32 counts[1, n_mat]";
      return false;
    }
    Importance imp;
    imp.cols = cols;
    imp.nMat = nMat;
    imp.values.resize(static_cast<size_t>(cols * nMat));
    for (int64_t m = 0; m < nMat; ++m) {
      float count;
      std::memcpy(&count, counts->data + 4 * m, 4);
      for (int64_t c = 0; c < cols; ++c) {
        float sum;
        std::memcpy(&sum, t.data + 4 * (m * cols + c), 4);
        imp.values[m * cols + c] = count > 0 ? sum / count : 1.0f;
      }
    }
    out[base] = std::move(imp);
  }
  if (out.empty()) {
    *error = "imatrix " + path + ": no '<tensor>.in_sum2' entries";
    return false;
  }
  return true;
}

/// Whether two paths name one file (same device and inode: hard links and
/// symlinks included).
bool sameFile(const std::string &a, const std::string &b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 &&
         sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/// A type name from Formats.def, matched case-insensitively ("Q4_K").
const FormatInfo *findFormat(const std::string &name) {
  if (const FormatInfo *f = lookupFormat(name))
    return f;
  auto lower = [](std::string x) {
    for (char &c : x)
      c = static_cast<char>(std::tolower(c));
    return x;
  };
  for (const FormatInfo &f : kFormats)
    if (lower(name) == lower(std::string(f.name)))
      return &f;
  return nullptr;
}

const FormatInfo *findFormat(uint32_t ggmlId) {
  for (const FormatInfo &f : kFormats)
    if (f.ggmlId == ggmlId)
      return &f;
  return nullptr;
}

/// `--tensor-type REGEX=TYPE`: tensors whose name contains a match of
/// REGEX become TYPE (the first matching rule wins).
struct TypeRule {
  std::string text;
  std::regex re;
  const FormatInfo *format;
};

int cmdQuantize(const std::vector<std::string> &args) {
  std::vector<std::string> pos;
  std::string typeArg, regexArg, imatrixArg, typesFromArg;
  std::vector<TypeRule> rules;
  bool haveRegex = false;
  for (size_t k = 0; k < args.size(); ++k) {
    const std::string &a = args[k];
    auto value = [&](std::string &dst) {
      if (k + 1 >= args.size())
        return false;
      dst = args[++k];
      return true;
    };
    if (a == "--type") {
      if (!value(typeArg))
        return usage("quantize: --type needs a value");
    } else if (a == "--tensors") {
      if (!value(regexArg))
        return usage("quantize: --tensors needs a value");
      haveRegex = true;
    } else if (a == "--tensor-type") {
      std::string rule;
      if (!value(rule))
        return usage("quantize: --tensor-type needs REGEX=TYPE");
      size_t eq = rule.rfind('=');
      if (eq == std::string::npos || eq == 0)
        return usage("quantize: --tensor-type '" + rule +
                     "' is not REGEX=TYPE");
      const FormatInfo *f = findFormat(rule.substr(eq + 1));
      if (!f)
        return usage("quantize: unknown type in --tensor-type '" + rule + "'");
      try {
        rules.push_back({rule, std::regex(rule.substr(0, eq),
                                          std::regex::ECMAScript),
                         f});
      } catch (const std::regex_error &e) {
        return usage("quantize: bad regex in --tensor-type '" + rule +
                     "': " + e.what());
      }
    } else if (a == "--types-from") {
      if (!value(typesFromArg))
        return usage("quantize: --types-from needs a value");
    } else if (a == "--imatrix") {
      if (!value(imatrixArg))
        return usage("quantize: --imatrix needs a value");
    } else if (!a.empty() && a[0] == '-')
      return usage("quantize: unknown option '" + a + "'");
    else
      pos.push_back(a);
  }
  if (pos.size() != 2)
    return usage("quantize: expected IN.gguf OUT.gguf");
  if (haveRegex && typeArg.empty())
    return usage("quantize: --tensors selects the tensors --type converts");
  if (typeArg.empty() && rules.empty() && typesFromArg.empty())
    return usage("quantize: give --type, --tensor-type or --types-from");
  const FormatInfo *target = nullptr;
  if (!typeArg.empty() && !(target = findFormat(typeArg)))
    return usage("quantize: unknown --type '" + typeArg + "'");
  std::regex re;
  if (haveRegex) {
    try {
      re = std::regex(regexArg, std::regex::ECMAScript);
    } catch (const std::regex_error &e) {
      return usage("quantize: bad --tensors regex: " + std::string(e.what()));
    }
  }
  const std::string &in = pos[0], &out = pos[1];
  if (sameFile(in, out))
    return fail("refusing to write " + out + ": it is the input file");

  int rc = kExitOk;
  auto file = openOrReport(in, rc);
  if (!file)
    return rc;
  std::string err;
  std::map<std::string, Importance> imatrix;
  if (!imatrixArg.empty() && !loadImatrix(imatrixArg, imatrix, &err))
    return fail(err);

  // --types-from REF: each tensor takes the type of REF's tensor of the
  // same name (a file llama-quantize made, say: the same mix, the same
  // size); tensors REF lacks fall to the other options.
  std::map<std::string, const FormatInfo *> refTypes;
  std::optional<Value> refFileType;
  if (!typesFromArg.empty()) {
    auto ref = openOrReport(typesFromArg, rc);
    if (!ref)
      return rc;
    for (const TensorInfo &t : ref->tensors()) {
      const FormatInfo *f = findFormat(t.ggmlType);
      if (!f)
        return fail("--types-from " + typesFromArg + ": '" + t.name +
                    "' has a type qcc cannot encode");
      refTypes[t.name] = f;
    }
    if (const Value *v = ref->find("general.file_type"))
      refFileType = *v;
  }

  Writer w = Writer::fromFile(*file);
  size_t total = file->tensors().size(), index = 0, converted = 0;
  for (const TensorInfo &t : file->tensors()) {
    ++index;
    // The explicit choices first (an error when they cannot be honoured),
    // then --type over its selection (which skips what it cannot convert).
    const FormatInfo *want = nullptr;
    std::string source;
    for (const TypeRule &r : rules)
      if (std::regex_search(t.name, r.re)) {
        want = r.format;
        source = "--tensor-type " + r.text;
        break;
      }
    if (!want) {
      auto it = refTypes.find(t.name);
      if (it != refTypes.end()) {
        want = it->second;
        source = "--types-from";
      }
    }
    bool strict = want != nullptr || haveRegex;
    if (!want && target &&
        (haveRegex ? std::regex_search(t.name, re) : t.nDims >= 2))
      want = target;
    if (!want)
      continue;
    if (t.ggmlType == want->ggmlId) {
      if (source.empty())
        std::cerr << "[" << index << "/" << total << "] " << t.name
                  << ": kept as " << want->name << " (already "
                  << want->name << ")\n";
      continue;
    }
    std::string why;
    if (isStorageType(t.ggmlType))
      why = "integer/f64 tensors are not quantized";
    else if (t.ne[0] % want->blockElems != 0)
      why = "ne[0] = " + std::to_string(t.ne[0]) +
            " is not a multiple of the block length " +
            std::to_string(want->blockElems);
    if (!why.empty()) {
      // An explicit selection that cannot be honoured is an error; the
      // default selection just leaves such tensors as they are.
      if (strict)
        return fail("cannot quantize '" + t.name + "' to " +
                    std::string(want->name) + ": " + why +
                    (source.empty() ? "" : " (" + source + ")"));
      std::cerr << "[" << index << "/" << total << "] " << t.name
                << ": kept as " << typeName(t.ggmlType) << " (" << why
                << ")\n";
      continue;
    }
    Format fmt = want->format;
    std::vector<float> values;
    if (!decodeTensor(t, values, &err))
      return fail(err);
    size_t rowLen = static_cast<size_t>(t.ne[0]);
    size_t rows = rowLen ? values.size() / rowLen : 0;
    // An imatrix entry holds one importance vector per matrix (several for
    // stacked expert tensors); each matrix is encoded with its own.
    const Importance *imp = nullptr;
    auto it = imatrix.find(t.name);
    if (it != imatrix.end()) {
      imp = &it->second;
      if (imp->cols != t.ne[0] ||
          (imp->nMat != 1 && static_cast<uint64_t>(imp->nMat) * rowLen *
                                     static_cast<uint64_t>(t.ne[1]) !=
                                 values.size()))
        return fail("imatrix entry for '" + t.name +
                    "' does not match the tensor's shape");
    } else if (encodeNeedsImportance(fmt)) {
      return fail("'" + t.name + "': " + std::string(want->name) +
                  " needs an importance matrix; pass --imatrix with an "
                  "entry for this tensor");
    }
    size_t nMat = imp && imp->nMat > 1 ? static_cast<size_t>(imp->nMat) : 1;
    size_t rowsPerMat = rows / nMat;
    std::vector<uint8_t> bytes(encodedBytes(fmt, values.size()));
    size_t rowBytes = encodedBytes(fmt, rowLen);
    for (size_t m = 0; m < nMat; ++m) {
      const float *importance =
          imp ? imp->values.data() + m * static_cast<size_t>(imp->cols)
              : nullptr;
      if (!encodeFromF32(fmt, values.data() + m * rowsPerMat * rowLen,
                         bytes.data() + m * rowsPerMat * rowBytes, rowsPerMat,
                         rowLen, importance, &err))
        return fail("'" + t.name + "': " + err);
    }
    std::cerr << "[" << index << "/" << total << "] " << t.name << ": "
              << typeName(t.ggmlType) << " -> " << want->name << " ("
              << t.nbytes << " -> " << bytes.size() << " bytes)\n";
    w.replaceTensor(t.name, want->ggmlId, std::move(bytes));
    ++converted;
  }
  // The file type names the mix: --types-from's, else --type's.
  if (refFileType)
    w.set("general.file_type", *refFileType);
  else if (target)
    if (auto ftype = llamaFileType(target->format))
      w.set("general.file_type", Value::makeU32(*ftype));
  w.set("general.quantization_version", Value::makeU32(2));
  if (!w.write(out, &err))
    return fail(out + ": " + err);
  std::cerr << "qcc-gguf: quantized " << converted << " of " << total
            << " tensors, wrote " << out << "\n";
  return kExitOk;
}

//===----------------------------------------------------------------------===//
// rotate
//===----------------------------------------------------------------------===//

/// y = H·x for the orthonormal randomized Hadamard matrix H = Had_n·D/√n of
/// `signs` (D = diag(±1)), in place over x[0..n) (n a power of two): the
/// fast Walsh-Hadamard transform after the sign flips.
void rotateHadamard(float *x, const std::vector<float> &signs) {
  size_t n = signs.size();
  for (size_t i = 0; i < n; ++i)
    x[i] *= signs[i];
  for (size_t h = 1; h < n; h *= 2)
    for (size_t i = 0; i < n; i += 2 * h)
      for (size_t j = i; j < i + h; ++j) {
        float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (size_t i = 0; i < n; ++i)
    x[i] *= scale;
}

/// The metadata value of `key` as an unsigned integer, or an error.
bool metaUInt(const File &f, const std::string &key, uint64_t &out,
              std::string *error) {
  const Value *v = f.find(key);
  if (!v || !v->asUInt(out) || out == 0) {
    *error = "missing or non-integer metadata key '" + key + "'";
    return false;
  }
  return true;
}

/// `qcc-gguf rotate IN OUT [--seed S]`: folds a randomized Hadamard
/// rotation into each attention block's value and output projections,
/// W_v' = H·W_v (every key/value head's rows) and W_o' = W_o·Hᵀ (every
/// query head's columns), which leaves the model's function unchanged
/// (attention mixes value vectors linearly over positions, and Hᵀ·H = I)
/// but spreads each row's outliers over the head (incoherence processing,
/// as QuIP does), so that the two matrices quantize with less error. The
/// rotated tensors are written in f32 (lossless); requantize them with
/// `quantize` (after a fresh `imatrix`, since W_o's inputs are rotated).
int cmdRotate(const std::vector<std::string> &args) {
  std::vector<std::string> pos;
  uint64_t seed = 0;
  for (size_t k = 0; k < args.size(); ++k) {
    if (args[k] == "--seed") {
      if (k + 1 >= args.size())
        return usage("rotate: --seed needs a value");
      try {
        size_t used = 0;
        seed = std::stoull(args[++k], &used);
        if (used != args[k].size())
          throw std::invalid_argument("trailing characters");
      } catch (const std::exception &) {
        return usage("rotate: --seed needs a non-negative integer");
      }
    } else if (!args[k].empty() && args[k][0] == '-')
      return usage("rotate: unknown option '" + args[k] + "'");
    else
      pos.push_back(args[k]);
  }
  if (pos.size() != 2)
    return usage("rotate: expected IN.gguf OUT.gguf");
  const std::string &in = pos[0], &out = pos[1];
  if (sameFile(in, out))
    return fail("refusing to write " + out + ": it is the input file");
  int rc = kExitOk;
  auto file = openOrReport(in, rc);
  if (!file)
    return rc;
  std::string err;
  const Value *archV = file->find("general.architecture");
  if (!archV || archV->type != ValueType::String)
    return fail(in + ": no general.architecture");
  const std::string arch = archV->str;
  uint64_t layers = 0, heads = 0, kvHeads = 0, headDim = 0;
  if (!metaUInt(*file, arch + ".block_count", layers, &err) ||
      !metaUInt(*file, arch + ".attention.head_count", heads, &err))
    return fail(in + ": " + err);
  if (!metaUInt(*file, arch + ".attention.head_count_kv", kvHeads, &err))
    kvHeads = heads;
  if (!metaUInt(*file, arch + ".attention.value_length", headDim, &err)) {
    uint64_t width = 0;
    if (!metaUInt(*file, arch + ".embedding_length", width, &err))
      return fail(in + ": " + err);
    headDim = width / heads;
  }
  if (headDim & (headDim - 1))
    return fail(in + ": the value head size " + std::to_string(headDim) +
                " is not a power of two (a Hadamard matrix of that size is "
                "not built)");
  if (heads % kvHeads)
    return fail(in + ": " + std::to_string(heads) +
                " query heads do not group over " + std::to_string(kvHeads) +
                " key/value heads");
  Writer w = Writer::fromFile(*file);
  // One random sign vector per layer (splitmix64 of the seed and layer).
  auto signsOf = [&](uint64_t layer) {
    std::vector<float> signs(headDim);
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + layer + 1;
    for (size_t i = 0; i < headDim; ++i) {
      x += 0x9E3779B97F4A7C15ull;
      uint64_t z = x;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      signs[i] = (z & 1) ? -1.0f : 1.0f;
    }
    return signs;
  };
  for (uint64_t l = 0; l < layers; ++l) {
    std::string p = "blk." + std::to_string(l) + ".";
    const TensorInfo *v = file->findTensor(p + "attn_v.weight");
    const TensorInfo *o = file->findTensor(p + "attn_output.weight");
    if (!v || !o)
      return fail(in + ": layer " + std::to_string(l) +
                  " has no attn_v.weight / attn_output.weight");
    if (file->findTensor(p + "attn_v.bias") ||
        file->findTensor(p + "attn_output.bias"))
      return fail(in + ": layer " + std::to_string(l) +
                  " has value/output biases, which rotate is not written for");
    // GGUF: ne[0] is a row's length (the input), ne[1] the rows (outputs).
    if (v->nDims != 2 || o->nDims != 2 ||
        static_cast<uint64_t>(v->ne[1]) != kvHeads * headDim ||
        static_cast<uint64_t>(o->ne[0]) != heads * headDim)
      return fail(in + ": layer " + std::to_string(l) +
                  ": attn_v / attn_output shapes do not match " +
                  std::to_string(heads) + " heads (" + std::to_string(kvHeads) +
                  " key/value) of " + std::to_string(headDim));
    std::vector<float> signs = signsOf(l);
    std::vector<float> vv, ov;
    if (!decodeTensor(*v, vv, &err) || !decodeTensor(*o, ov, &err))
      return fail(err);
    // W_v' = H·W_v per kv head: rotate each column of a head's row block.
    size_t vin = static_cast<size_t>(v->ne[0]);
    std::vector<float> col(headDim);
    for (uint64_t hd = 0; hd < kvHeads; ++hd)
      for (size_t c = 0; c < vin; ++c) {
        for (size_t r = 0; r < headDim; ++r)
          col[r] = vv[(hd * headDim + r) * vin + c];
        rotateHadamard(col.data(), signs);
        for (size_t r = 0; r < headDim; ++r)
          vv[(hd * headDim + r) * vin + c] = col[r];
      }
    // W_o' = W_o·Hᵀ per query head: each row's head block x becomes H·x.
    size_t oin = static_cast<size_t>(o->ne[0]);
    size_t orows = static_cast<size_t>(o->ne[1]);
    for (size_t r = 0; r < orows; ++r)
      for (uint64_t hd = 0; hd < heads; ++hd)
        rotateHadamard(ov.data() + r * oin + hd * headDim, signs);
    auto bytesOf = [](const std::vector<float> &x) {
      std::vector<uint8_t> b(x.size() * sizeof(float));
      std::memcpy(b.data(), x.data(), b.size());
      return b;
    };
    w.replaceTensor(v->name, 0 /* F32 */, bytesOf(vv));
    w.replaceTensor(o->name, 0 /* F32 */, bytesOf(ov));
    std::cerr << "[" << l + 1 << "/" << layers << "] " << p
              << "attn_v, attn_output: " << typeName(v->ggmlType) << ", "
              << typeName(o->ggmlType) << " -> f32, rotated\n";
  }
  w.set("qcc.rotate.hadamard_seed", Value::makeU64(seed));
  if (!w.write(out, &err))
    return fail(out + ": " + err);
  std::cerr << "qcc-gguf: rotated the value/output projections of " << layers
            << " layers (head size " << headDim << ", seed " << seed
            << "), wrote " << out << "\n";
  return kExitOk;
}

} // namespace

/// `imatrix` needs the compiled forward pass, which the Python frontend
/// builds: run its qcc-imatrix (beside this binary when installed, else
/// the source tree's scripts/ wrapper, else from PATH) with the arguments.
int cmdImatrix(char **argv) {
  std::vector<std::string> candidates;
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    std::string dir(self, n);
    candidates.push_back(dir.substr(0, dir.rfind('/')) + "/qcc-imatrix");
  }
#ifdef QCC_SCRIPTS_DIR
  candidates.push_back(std::string(QCC_SCRIPTS_DIR) + "/qcc-imatrix");
#endif
  // Its messages then name this command.
  setenv("QCC_IMATRIX_PROG", "qcc-gguf imatrix", 1);
  for (const std::string &c : candidates)
    if (access(c.c_str(), X_OK) == 0)
      execv(c.c_str(), argv + 1);
  execvp("qcc-imatrix", argv + 1);
  return fail("imatrix: cannot run qcc-imatrix (the Python frontend): " +
              std::string(std::strerror(errno)));
}

int main(int argc, char **argv) {
  if (argc < 2)
    return usage("missing command");
  std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (cmd == "info")
      return cmdInfo(args);
    if (cmd == "verify")
      return cmdVerify(args);
    if (cmd == "dequant")
      return cmdDequant(args);
    if (cmd == "quantize")
      return cmdQuantize(args);
    if (cmd == "imatrix")
      return cmdImatrix(argv);
    if (cmd == "rotate")
      return cmdRotate(args);
    if (cmd == "-h" || cmd == "--help") {
      std::cout << kUsage;
      return kExitOk;
    }
    return usage("unknown command '" + cmd + "'");
  } catch (const std::exception &e) {
    // Allocation failures and the like become a clean error, never a crash.
    return fail(std::string("internal error: ") + e.what());
  }
}
