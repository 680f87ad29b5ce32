//===- qcc.cpp - The qcc driver: train.mlir -> step.so --------------------===//
//
// Parses a module in the qcc dialect, runs the same qcc-lower-to-cpu pipeline
// that qcc-opt registers, translates to LLVM IR, adds the step ABI (entry
// wrappers and manifest), optimizes and compiles in-process for the host CPU,
// and links a shared library. Nothing is written unless every stage
// succeeds; outputs appear atomically (temporary file + rename).
//
//===----------------------------------------------------------------------===//

#include "qcc/Dialect/Qcc/IR/QccDialect.h"
#include "qcc/Pipelines/Pipelines.h"
#include "qcc/Target/StepABI.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/SubtargetFeature.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/MemoryBuffer.h"

#include <nlohmann/json.hpp>

using namespace mlir;
namespace cl = llvm::cl;

static cl::OptionCategory qccCategory("qcc options");

static cl::opt<std::string> inputFile(cl::Positional, cl::desc("<input.mlir>"),
                                      cl::Required, cl::cat(qccCategory));
static cl::opt<std::string> outputFile("o", cl::desc("Output file"),
                                       cl::value_desc("file"), cl::Required,
                                       cl::cat(qccCategory));
enum class Emit { Mlir, Llvm, Obj, So, Ptx };
static cl::opt<Emit> emit(
    "emit", cl::desc("What to write"), cl::init(Emit::So),
    cl::values(clEnumValN(Emit::Mlir, "mlir", "lowered MLIR (LLVM dialect)"),
               clEnumValN(Emit::Llvm, "llvm", "optimized LLVM IR (host)"),
               clEnumValN(Emit::Obj, "obj", "object file"),
               clEnumValN(Emit::So, "so", "shared library (default)"),
               clEnumValN(Emit::Ptx, "ptx",
                          "the step's PTX module (--target=cuda)")),
    cl::cat(qccCategory));
static cl::opt<std::string> target("target", cl::desc("Target: cpu or cuda"),
                                   cl::init("cpu"), cl::cat(qccCategory));
static cl::opt<std::string>
    gpuArch("gpu-arch",
            cl::desc("GPU architecture for --target=cuda: sm_80 or sm_90 "
                     "(default sm_80)"),
            cl::init("sm_80"), cl::cat(qccCategory));
static cl::opt<bool> kernelForm(
    "kernel-form",
    cl::desc("CPU target: lower dequant and qmatmul through the kernel form "
             "the CUDA target maps to GPU threads (runs the GPU kernels' "
             "code on the CPU, for testing)"),
    cl::init(false), cl::cat(qccCategory));
static cl::opt<unsigned> optLevel("O", cl::desc("Optimization level 0-3"),
                                  cl::Prefix, cl::init(2),
                                  cl::cat(qccCategory));
static cl::opt<bool> fuseWeightUpdate(
    "fuse-weight-update",
    cl::desc("Fuse weight gradients, update rules and carry updates into one "
             "pass over each weight (default true; false keeps the unfused "
             "form, e.g. as a reference)"),
    cl::init(true), cl::cat(qccCategory));
static cl::opt<bool> outlineKernels(
    "outline-kernels",
    cl::desc("Share one function among identical ops (qcc-outline-kernels; "
             "default true); false lowers every op in place"),
    cl::init(true), cl::cat(qccCategory));
static cl::opt<bool> profile(
    "profile",
    cl::desc("Time every call of each kernel (qcc-profile-kernels): qcc-run "
             "--profile and qcc-train --profile print the table per kernel; "
             "the step computes the same bits"),
    cl::init(false), cl::cat(qccCategory));
static cl::opt<bool> gemvInt8(
    "gemv-int8",
    cl::desc("Forward qmatmuls with at most 8 activation rows on q4_0, q8_0, "
             "q4_K and q6_K weights quantize the activations to int8 blocks "
             "and use integer dot products, as ggml does (faster GEMV, but "
             "the activations are rounded to 8 bits per block; default "
             "false: the exact f32 path that training needs)"),
    cl::init(false), cl::cat(qccCategory));
static cl::opt<bool> gemmBf16(
    "gemm-bf16",
    cl::desc("Every micro-GEMM (qmatmul tiles of more than 8 rows, f32 "
             "contractions such as attention's, weight gradients) rounds "
             "its operands to bf16 and sums the exact products in f32, "
             "with AVX512-BF16 where the CPU has it (bf16 autocast's "
             "trade; default false: f32)"),
    cl::init(false), cl::cat(qccCategory));
static cl::opt<std::string> int8Dot(
    "int8-dot",
    cl::desc("Instructions of --gemv-int8's dot products: auto (default: "
             "avx512vnni if the target CPU has AVX512-VNNI and AVX512BW, "
             "else avx2 if it has AVX2, else generic), avx512vnni, avx2, "
             "generic"),
    cl::init("auto"), cl::cat(qccCategory));
static cl::opt<std::string> mcpu(
    "mcpu",
    cl::desc("Compile for this CPU (an LLVM CPU name such as znver4) "
             "instead of the host and its features; for inspecting code "
             "with --emit=obj, the library may not run here"),
    cl::init(""), cl::cat(qccCategory));
// `--threads N` is parsed by hand: libLLVM already registers a global
// option named "threads", so a cl::opt of that name would abort at startup.
static unsigned threads = 0;

/// Removes `--threads N` / `--threads=N` from argv into `threads`. Returns
/// false (having printed why) on a malformed value.
static bool takeThreadsOption(int &argc, char **argv) {
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    StringRef arg = argv[i];
    std::optional<StringRef> value;
    if (arg == "--threads" || arg == "-threads") {
      if (i + 1 >= argc) {
        llvm::errs() << "qcc: error: --threads needs a value\n";
        return false;
      }
      value = StringRef(argv[++i]);
    } else if (arg.consume_front("--threads=") ||
               arg.consume_front("-threads=")) {
      value = arg;
    }
    if (!value) {
      argv[out++] = argv[i];
      continue;
    }
    if (value->getAsInteger(10, threads)) {
      llvm::errs() << "qcc: error: --threads expects a number, got '" << *value
                   << "'\n";
      return false;
    }
  }
  argc = out;
  return true;
}

/// Writes `contents` to `path` through a temporary file in the same
/// directory, so a failure never leaves a partial output.
static LogicalResult writeAtomically(StringRef path, StringRef contents) {
  std::string error;
  auto out = openOutputFile(path.str() + ".tmp", &error);
  if (!out) {
    llvm::errs() << "qcc: error: " << error << "\n";
    return failure();
  }
  out->os() << contents;
  out->os().flush();
  if (out->os().has_error()) {
    llvm::errs() << "qcc: error: cannot write " << path << ".tmp\n";
    return failure();
  }
  out->keep();
  if (std::error_code ec = llvm::sys::fs::rename(path + ".tmp", path)) {
    llvm::errs() << "qcc: error: cannot rename to " << path << ": "
                 << ec.message() << "\n";
    return failure();
  }
  return success();
}

static std::unique_ptr<llvm::TargetMachine> hostTargetMachine() {
  std::string triple = llvm::sys::getProcessTriple();
  std::string error;
  const llvm::Target *t =
      llvm::TargetRegistry::lookupTarget(llvm::Triple(triple), error);
  if (!t) {
    llvm::errs() << "qcc: error: no LLVM target for " << triple << ": "
                 << error << "\n";
    return nullptr;
  }
  // The host CPU with the features it reports, or --mcpu with that CPU's
  // own features.
  llvm::SubtargetFeatures features;
  if (mcpu.empty())
    for (const auto &[name, enabled] : llvm::sys::getHostCPUFeatures())
      features.AddFeature(name, enabled);
  std::string cpu = mcpu.empty() ? llvm::sys::getHostCPUName().str() : mcpu;
  llvm::TargetOptions options;
  auto level = optLevel == 0   ? llvm::CodeGenOptLevel::None
               : optLevel == 1 ? llvm::CodeGenOptLevel::Less
               : optLevel == 2 ? llvm::CodeGenOptLevel::Default
                               : llvm::CodeGenOptLevel::Aggressive;
  return std::unique_ptr<llvm::TargetMachine>(t->createTargetMachine(
      llvm::Triple(triple), cpu, features.getString(),
      options, llvm::Reloc::PIC_, std::nullopt, level));
}

static void optimize(llvm::Module &module, llvm::TargetMachine &tm) {
  if (optLevel == 0)
    return;
  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  llvm::PassBuilder pb(&tm);
  pb.registerModuleAnalyses(mam);
  pb.registerCGSCCAnalyses(cgam);
  pb.registerFunctionAnalyses(fam);
  pb.registerLoopAnalyses(lam);
  pb.crossRegisterProxies(lam, fam, cgam, mam);
  llvm::OptimizationLevel level = optLevel == 1   ? llvm::OptimizationLevel::O1
                                  : optLevel == 2 ? llvm::OptimizationLevel::O2
                                                  : llvm::OptimizationLevel::O3;
  pb.buildPerModuleDefaultPipeline(level).run(module, mam);
}

static FailureOr<std::string> emitObject(llvm::Module &module,
                                         llvm::TargetMachine &tm) {
  llvm::SmallString<0> buffer;
  llvm::raw_svector_ostream os(buffer);
  llvm::legacy::PassManager pm;
  if (tm.addPassesToEmitFile(pm, os, nullptr,
                             llvm::CodeGenFileType::ObjectFile)) {
    llvm::errs() << "qcc: error: the target cannot emit object files\n";
    return failure();
  }
  pm.run(module);
  return std::string(buffer.str());
}

/// Links `object` into a shared library at `path` with the system compiler
/// driver, with the step runtime and against LLVM's OpenMP runtime for the
/// parallel loops.
static LogicalResult linkSharedLibrary(StringRef object, StringRef path,
                                       bool cuda) {
  llvm::SmallString<128> objPath;
  int fd;
  if (llvm::sys::fs::createTemporaryFile("qcc-step", "o", fd, objPath)) {
    llvm::errs() << "qcc: error: cannot create a temporary object file\n";
    return failure();
  }
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << object;
  }
  llvm::FileRemover removeObj(objPath);
  llvm::ErrorOr<std::string> cc = llvm::sys::findProgramByName("cc");
  if (!cc) {
    llvm::errs() << "qcc: error: no system linker driver 'cc' on PATH\n";
    return failure();
  }
  std::string tmpOut = path.str() + ".tmp";
  std::string libDir = QCC_LLVM_LIBRARY_DIR;
  std::string libFlag = "-L" + libDir, rpathFlag = "-Wl,-rpath," + libDir;
  // The step runtime is linked whole so that qcc_step_take_error is always
  // exported; the codecs only as far as it needs them, and hidden, so a host
  // that has its own copy never binds to the step's.
  SmallVector<StringRef> argv = {*cc,
                                 "-shared",
                                 "-o",
                                 tmpOut,
                                 objPath,
                                 "-Wl,--whole-archive",
                                 QCC_STEP_RUNTIME_ARCHIVE,
                                 // CUDA steps: the mgpu* launch functions
                                 // over the dlopen'ed driver.
                                 cuda ? QCC_CUDA_SHIM_ARCHIVE : "",
                                 "-Wl,--no-whole-archive",
                                 QCC_CODECS_ARCHIVE,
                                 "-Wl,--exclude-libs,libqcc_codecs.a",
                                 QCC_CLANG_RT_BUILTINS,
                                 QCC_EXCLUDE_CLANG_RT,
                                 libFlag,

                                 rpathFlag,
                                 "-lomp",
                                 "-lstdc++",
                                 "-pthread",
                                 "-lm"};
  llvm::erase(argv, StringRef());
  std::string errMsg;
  int rc = llvm::sys::ExecuteAndWait(*cc, argv, std::nullopt, {}, 0, 0,
                                     &errMsg);
  if (rc != 0) {
    llvm::sys::fs::remove(tmpOut);
    llvm::errs() << "qcc: error: linking failed (" << *cc << " exited " << rc
                 << (errMsg.empty() ? "" : ": " + errMsg) << ")\n";
    return failure();
  }
  if (std::error_code ec = llvm::sys::fs::rename(tmpOut, path)) {
    llvm::errs() << "qcc: error: cannot rename to " << path << ": "
                 << ec.message() << "\n";
    return failure();
  }
  return success();
}

/// The manifest of a CUDA step says so: the runtime then passes device
/// buffers (docs/runtime.md).
static std::string addCudaTarget(StringRef manifest, StringRef arch) {
  nlohmann::json m = nlohmann::json::parse(manifest.str());
  m["target"] = "cuda";
  m["gpu_arch"] = arch.str();
  return m.dump();
}

/// The PTX of the step's (single, merged) GPU module.
static FailureOr<std::string> stepPtx(ModuleOp module) {
  std::string ptx;
  unsigned count = 0;
  for (auto binary : module.getOps<gpu::BinaryOp>()) {
    for (Attribute a : binary.getObjects()) {
      auto object = cast<gpu::ObjectAttr>(a);
      if (object.getFormat() != gpu::CompilationTarget::Assembly) {
        binary.emitError("expected a PTX (assembly) object");
        return failure();
      }
      ptx = object.getObject().str();
      ++count;
    }
  }
  if (count > 1) {
    module.emitError("expected one GPU module, found ") << count;
    return failure();
  }
  return ptx; // empty: a step without kernels
}

/// Assembles `ptx` with the CUDA toolkit's ptxas when it is installed, so a
/// step that the GPU would reject is never written. Without ptxas the PTX
/// is embedded unchecked (the driver JIT-compiles it at load).
static LogicalResult assembleWithPtxas(StringRef ptx, StringRef arch) {
  if (ptx.empty())
    return success();
  llvm::ErrorOr<std::string> ptxas = llvm::sys::findProgramByName("ptxas");
  if (!ptxas)
    ptxas = llvm::sys::findProgramByName("ptxas", {"/usr/local/cuda/bin"});
  if (!ptxas)
    return success();
  llvm::SmallString<128> in, out, log;
  int fd;
  if (llvm::sys::fs::createTemporaryFile("qcc-step", "ptx", fd, in) ||
      llvm::sys::fs::createTemporaryFile("qcc-step", "cubin", out) ||
      llvm::sys::fs::createTemporaryFile("qcc-ptxas", "log", log)) {
    llvm::errs() << "qcc: error: cannot create temporary files for ptxas\n";
    return failure();
  }
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << ptx;
  }
  llvm::FileRemover removeIn(in), removeOut(out), removeLog(log);
  std::string archFlag = ("-arch=" + arch).str();
  SmallVector<StringRef> argv = {*ptxas, archFlag, in, "-o", out};
  std::optional<StringRef> redirects[] = {std::nullopt, log.str(), log.str()};
  std::string errMsg;
  int rc = llvm::sys::ExecuteAndWait(*ptxas, argv, std::nullopt, redirects, 0,
                                     0, &errMsg);
  if (rc != 0) {
    auto text = llvm::MemoryBuffer::getFile(log);
    llvm::errs() << "qcc: error: ptxas rejected the generated PTX for "
                 << arch << " (exit " << rc << ")"
                 << (errMsg.empty() ? "" : ": " + errMsg) << "\n"
                 << (text ? (*text)->getBuffer() : "");
    return failure();
  }
  return success();
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  if (!takeThreadsOption(argc, argv))
    return 2;
  cl::HideUnrelatedOptions(qccCategory);
  cl::ParseCommandLineOptions(
      argc, argv,
      "qcc: compile a training step in the qcc dialect to a shared library\n\n"
      "  --threads=<N>  threads for parallel loops (1 = serial, 0 = all "
      "cores)\n");
  if (target != "cpu" && target != "cuda") {
    llvm::errs() << "qcc: error: unsupported --target=" << target
                 << " (supported: cpu, cuda)\n";
    return 2;
  }
  bool cuda = target == "cuda";
  if (cuda && gpuArch != "sm_80" && gpuArch != "sm_90") {
    llvm::errs() << "qcc: error: unsupported --gpu-arch=" << gpuArch
                 << " (supported: sm_80, sm_90)\n";
    return 2;
  }
  if (!cuda && emit == Emit::Ptx) {
    llvm::errs() << "qcc: error: --emit=ptx needs --target=cuda\n";
    return 2;
  }
  if (cuda && kernelForm) {
    llvm::errs() << "qcc: error: --kernel-form is for --target=cpu (the "
                    "CUDA target always uses it)\n";
    return 2;
  }
  if (optLevel > 3) {
    llvm::errs() << "qcc: error: -O" << optLevel << " is not 0..3\n";
    return 2;
  }

  DialectRegistry registry;
  registry.insert<qcc::QccDialect>();
  registerAllDialects(registry);
  registerAllExtensions(registry);
  registerAllToLLVMIRTranslations(registry);
  MLIRContext context(registry);
  context.loadAllAvailableDialects();

  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);
  std::string error;
  auto file = openInputFile(inputFile, &error);
  if (!file) {
    llvm::errs() << "qcc: error: " << error << "\n";
    return 1;
  }
  sourceMgr.AddNewSourceBuffer(std::move(file), llvm::SMLoc());
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    return 1;

  // The target first: --int8-dot=auto picks the dot instructions by its
  // features.
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  std::unique_ptr<llvm::TargetMachine> tm = hostTargetMachine();
  if (!tm)
    return 1;
  std::string dot = int8Dot;
  if (dot == "auto") {
    const llvm::MCSubtargetInfo *sti = tm->getMCSubtargetInfo();
    dot = sti->checkFeatures("+avx512vnni,+avx512bw") ? "avx512vnni"
          : sti->checkFeatures("+avx2")               ? "avx2"
                                                      : "generic";
  } else if (dot != "generic" && dot != "avx2" && dot != "avx512vnni") {
    llvm::errs() << "qcc: error: --int8-dot=" << dot
                 << " is not auto, avx512vnni, avx2 or generic\n";
    return 2;
  }

  // The tensor-level passes first: the manifest records which results the
  // fused, guarded updates let the host write in place.
  qcc::LowerToCPUOptions options;
  options.int8Activations = gemvInt8;
  options.int8Dot = dot;
  options.bf16Gemm = gemmBf16;
  options.threads = threads;
  // CUDA: weight updates stay unfused (qcc.weight_update has no kernel
  // form; the gradient, the rule and carry_update run as kernels).
  options.fuseWeightUpdate = fuseWeightUpdate && !cuda;
  options.outlineKernels = outlineKernels;
  options.profile = profile;
  if (profile && cuda) {
    llvm::errs() << "qcc: error: --profile times CPU steps; it cannot be "
                    "combined with --target=cuda\n";
    return 2;
  }
  if (profile && !outlineKernels) {
    llvm::errs() << "qcc: error: --profile times outlined kernels; it needs "
                    "--outline-kernels\n";
    return 2;
  }
  options.kernelForm = kernelForm;
  PassManager tensorPm(&context);
  qcc::buildQccTensorPipeline(tensorPm, options);
  if (failed(tensorPm.run(*module)))
    return 1;
  FailureOr<std::string> manifest = qcc::buildStepManifest(*module);
  if (failed(manifest))
    return 1;

  if (cuda)
    manifest = addCudaTarget(*manifest, gpuArch);
  if (cuda && StringRef(QCC_DEVICE_ENCODERS_BC).empty()) {
    bool reencodes = false;
    module->walk([&](Operation *op) {
      if (op->getName().getStringRef() == "qcc.carry_update") {
        op->emitOpError("needs the device block encoders, which this qcc was "
                        "built without (no CUDA toolkit or clang++ at build "
                        "time)");
        reencodes = true;
      }
    });
    if (reencodes)
      return 1;
  }

  PassManager pm(&context);
  if (cuda) {
    qcc::LowerToCUDAOptions cudaOptions;
    cudaOptions.chip = gpuArch;
    cudaOptions.deviceEncoders = QCC_DEVICE_ENCODERS_BC;
    cudaOptions.outlineKernels = outlineKernels;
    qcc::buildQccCUDALoweringPipeline(pm, cudaOptions);
  } else {
    qcc::buildQccLoweringPipeline(pm, options);
  }
  if (failed(pm.run(*module)))
    return 1;
  if (cuda) {
    FailureOr<std::string> ptx = stepPtx(*module);
    if (failed(ptx) || failed(assembleWithPtxas(*ptx, gpuArch)))
      return 1;
    if (emit == Emit::Ptx)
      return failed(writeAtomically(outputFile, *ptx));
  }
  if (emit == Emit::Mlir) {
    std::string text;
    llvm::raw_string_ostream os(text);
    module->print(os);
    return failed(writeAtomically(outputFile, text));
  }

  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(*module, llvmContext, "qcc-step");
  if (!llvmModule) {
    llvm::errs() << "qcc: error: translation to LLVM IR failed\n";
    return 1;
  }
  if (failed(qcc::emitStepEntryPoints(*llvmModule, *manifest, error))) {
    llvm::errs() << "qcc: error: " << error << "\n";
    return 1;
  }
  llvmModule->setDataLayout(tm->createDataLayout());
  llvmModule->setTargetTriple(tm->getTargetTriple());
  if (llvm::verifyModule(*llvmModule, &llvm::errs())) {
    llvm::errs() << "qcc: error: invalid LLVM IR (a qcc bug)\n";
    return 1;
  }
  optimize(*llvmModule, *tm);
  if (emit == Emit::Llvm) {
    std::string text;
    llvm::raw_string_ostream os(text);
    llvmModule->print(os, nullptr);
    return failed(writeAtomically(outputFile, text));
  }
  FailureOr<std::string> object = emitObject(*llvmModule, *tm);
  if (failed(object))
    return 1;
  if (emit == Emit::Obj)
    return failed(writeAtomically(outputFile, *object));
  return failed(linkSharedLibrary(*object, outputFile, cuda));
}
