//===- CudaTest.cpp - The CUDA loader, mgpu shim and device sessions ------===//
//
// Runs without a GPU: the loader against a missing driver and against the
// fake driver (fake_cuda_driver.cpp, loaded through QCC_CUDA_DRIVER), the
// mgpu shim inside the hand-written CUDA step fake_cuda_step.cpp, and
// sessions in device mode over both. Tests that need the process's driver
// to be missing run again in a fresh process, so the binary also passes when all
// tests run in one process.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/Cuda.h"
#include "qcc/Runtime/Gguf.h"
#include "qcc/Runtime/Session.h"
#include "qcc/Runtime/qcc_runtime.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <functional>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace qcc;
using qcc::cuda::Driver;

namespace {

const std::string kFakeDriver = QCC_FAKE_CUDA_DRIVER;
const std::string kFakeStep = QCC_FAKE_CUDA_STEP;
const std::string kFakeCpuStep = QCC_FAKE_CPU_STEP;
const std::string kMissing = "/nonexistent/qcc-test/libcuda.so.1";

/// The fake driver's test controls (the same library the loader opens).
struct Fake {
  void *handle = dlopen(kFakeDriver.c_str(), RTLD_NOW | RTLD_LOCAL);
  template <typename F> F fn(const char *name) {
    void *p = dlsym(handle, name);
    EXPECT_NE(p, nullptr) << name;
    return reinterpret_cast<F>(p);
  }
  void reset() { fn<void (*)()>("fake_cuda_reset")(); }
  void fail(const char *symbol, int result, int skip = 0) {
    fn<void (*)(const char *, int, int)>("fake_cuda_fail")(symbol, result,
                                                           skip);
  }
  int calls(const char *symbol) {
    return fn<int (*)(const char *)>("fake_cuda_calls")(symbol);
  }
  int count(const char *what) { return fn<int (*)()>(what)(); }
  int launches() { return count("fake_cuda_launch_count"); }
  std::string kernel(int i) {
    return fn<const char *(*)(int)>("fake_cuda_launch_kernel")(i);
  }
  std::vector<unsigned> dims(int i) {
    std::vector<unsigned> d(7);
    fn<void (*)(int, unsigned *)>("fake_cuda_launch_dims")(i, d.data());
    return d;
  }
  std::vector<uint8_t> param(int launch, int p) {
    std::vector<uint8_t> out(64);
    size_t n = fn<size_t (*)(int, int, void *, size_t)>(
        "fake_cuda_launch_param")(launch, p, out.data(), out.size());
    out.resize(n);
    return out;
  }
  template <typename T> T paramAs(int launch, int p) {
    std::vector<uint8_t> bytes = param(launch, p);
    EXPECT_EQ(bytes.size(), sizeof(T));
    T v{};
    std::memcpy(&v, bytes.data(), sizeof(T));
    return v;
  }
};

/// Runs `body` in a fresh process (this test alone, re-executed with
/// QCC_CUDA_TEST_CHILD set), which has its own driver singleton and
/// environment; true when every expectation in it held.
bool inFreshProcess(const std::function<void()> &body) {
  if (std::getenv("QCC_CUDA_TEST_CHILD")) {
    body();
    return true;
  }
  const ::testing::TestInfo *info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  std::string filter = std::string("--gtest_filter=") +
                       info->test_suite_name() + "." + info->name();
  pid_t pid = fork();
  if (pid == 0) {
    setenv("QCC_CUDA_TEST_CHILD", "1", 1);
    execl("/proc/self/exe", "qcc-cuda-tests", filter.c_str(),
          static_cast<char *>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void useFakeDriver() { setenv("QCC_CUDA_DRIVER", kFakeDriver.c_str(), 1); }

} // namespace

//===----------------------------------------------------------------------===//
// The loader
//===----------------------------------------------------------------------===//

TEST(CudaLoader, MissingLibraryIsReportedWithDlerror) {
  std::string error;
  EXPECT_EQ(Driver::load(kMissing, &error), nullptr);
  EXPECT_EQ(error.rfind("no CUDA driver found: ", 0), 0u) << error;
  EXPECT_NE(error.find(kMissing), std::string::npos) << error;
  EXPECT_NE(error.find("cannot open shared object file"), std::string::npos)
      << error;
  // The process carries on: the loader can be asked again.
  EXPECT_EQ(Driver::load(kMissing, &error), nullptr);
}

TEST(CudaLoader, EnvironmentOverrideToAMissingPath) {
  EXPECT_TRUE(inFreshProcess([] {
    setenv("QCC_CUDA_DRIVER", kMissing.c_str(), 1);
    EXPECT_EQ(Driver::defaultPath(), kMissing);
    std::string error;
    EXPECT_EQ(Driver::instance(&error), nullptr);
    EXPECT_EQ(error.rfind("no CUDA driver found: ", 0), 0u) << error;
    EXPECT_NE(error.find(kMissing), std::string::npos) << error;
    // Remembered, and the same message every time.
    std::string again;
    EXPECT_EQ(Driver::instance(&again), nullptr);
    EXPECT_EQ(again, error);
  }));
}

TEST(CudaLoader, DefaultLibcudaOnThisMachine) {
  if (void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
    dlclose(h);
    GTEST_SKIP() << "libcuda.so.1 is installed here";
  }
  EXPECT_TRUE(inFreshProcess([] {
    unsetenv("QCC_CUDA_DRIVER");
    EXPECT_EQ(Driver::defaultPath(), "libcuda.so.1");
    std::string error;
    EXPECT_EQ(Driver::instance(&error), nullptr);
    EXPECT_EQ(error.rfind("no CUDA driver found: libcuda.so.1", 0), 0u)
        << error;
  }));
}

TEST(CudaLoader, LibraryWithoutTheDriverApi) {
  std::string error;
  EXPECT_EQ(Driver::load(kFakeCpuStep, &error), nullptr);
  EXPECT_NE(error.find("has no cuGetErrorName"), std::string::npos) << error;
}

TEST(CudaLoader, FakeDriver) {
  Fake fake;
  fake.reset();
  std::string error;
  auto driver = Driver::load(kFakeDriver, &error);
  ASSERT_NE(driver, nullptr) << error;
  EXPECT_EQ(fake.calls("cuInit"), 1);
  EXPECT_EQ(fake.calls("cuDevicePrimaryCtxRetain"), 1);
  EXPECT_EQ(driver->deviceName(), "qcc fake CUDA device");
  EXPECT_EQ(driver->computeCapability(), "sm_80");
  EXPECT_EQ(driver->errorText(2), "CUDA_ERROR_OUT_OF_MEMORY (out of memory)");
  EXPECT_EQ(driver->errorText(12345), "CUDA error 12345");
  EXPECT_FALSE(driver->check(719, "cuSomething", &error));
  EXPECT_EQ(error,
            "cuSomething failed: CUDA_ERROR_LAUNCH_FAILED (unspecified launch "
            "failure)");
}

TEST(CudaLoader, CuInitFailureCarriesTheCudaError) {
  Fake fake;
  fake.reset();
  fake.fail("cuInit", 100);
  std::string error;
  EXPECT_EQ(Driver::load(kFakeDriver, &error), nullptr);
  EXPECT_NE(error.find("has no usable device: cuInit failed: "
                       "CUDA_ERROR_NO_DEVICE (no CUDA-capable device is "
                       "detected)"),
            std::string::npos)
      << error;
}

//===----------------------------------------------------------------------===//
// Buffers, streams, modules, launches
//===----------------------------------------------------------------------===//

TEST(CudaApi, BufferRoundTripOnAnyThread) {
  Fake fake;
  fake.reset();
  std::string error;
  auto driver = Driver::load(kFakeDriver, &error);
  ASSERT_NE(driver, nullptr) << error;
  int before = fake.count("fake_cuda_live_allocations");
  {
    cuda::Stream stream;
    ASSERT_TRUE(stream.create(*driver, &error)) << error;
    cuda::DeviceBuffer buffer;
    ASSERT_TRUE(buffer.allocate(*driver, 1000, &error)) << error;
    EXPECT_TRUE(fake.fn<int (*)(const void *, size_t)>("fake_cuda_is_device")(
        buffer.get(), 1000));
    std::vector<uint8_t> in(1000), out(1000);
    for (size_t i = 0; i < in.size(); ++i)
      in[i] = uint8_t(i * 7 + 3);
    ASSERT_TRUE(buffer.upload(in.data(), in.size(), stream, &error)) << error;
    ASSERT_TRUE(buffer.download(out.data(), out.size(), stream, &error))
        << error;
    ASSERT_TRUE(stream.synchronize(&error)) << error;
    EXPECT_EQ(in, out);
    EXPECT_FALSE(buffer.upload(in.data(), 1001, stream, &error));
    EXPECT_NE(error.find("into a device buffer of 1000"), std::string::npos);

    // Another thread has no current context until the API makes it so.
    std::thread([&] {
      std::string e;
      std::vector<uint8_t> back(1000);
      EXPECT_TRUE(buffer.download(back.data(), back.size(), stream, &e)) << e;
      EXPECT_TRUE(stream.synchronize(&e)) << e;
      EXPECT_EQ(back, in);
    }).join();

    cuda::DeviceBuffer moved = std::move(buffer);
    EXPECT_EQ(buffer.get(), nullptr);
    EXPECT_EQ(moved.size(), 1000u);
    EXPECT_EQ(fake.count("fake_cuda_live_allocations"), before + 1);
  }
  EXPECT_EQ(fake.count("fake_cuda_live_allocations"), before);
  EXPECT_EQ(fake.count("fake_cuda_live_streams"), 0);
}

TEST(CudaApi, FailuresCarryTheCudaErrorString) {
  Fake fake;
  fake.reset();
  std::string error;
  auto driver = Driver::load(kFakeDriver, &error);
  ASSERT_NE(driver, nullptr) << error;
  cuda::DeviceBuffer buffer;
  fake.fail("cuMemAlloc_v2", 2);
  EXPECT_FALSE(buffer.allocate(*driver, 4096, &error));
  EXPECT_EQ(error, "cuMemAlloc_v2(4096 bytes) failed: "
                   "CUDA_ERROR_OUT_OF_MEMORY (out of memory)");
  cuda::Stream stream;
  ASSERT_TRUE(stream.create(*driver, &error)) << error;
  fake.fail("cuStreamSynchronize", 719);
  EXPECT_FALSE(stream.synchronize(&error));
  EXPECT_EQ(error, "cuStreamSynchronize failed: CUDA_ERROR_LAUNCH_FAILED "
                   "(unspecified launch failure)");
}

TEST(CudaApi, ModuleLaunchAndJitLog) {
  Fake fake;
  fake.reset();
  std::string error;
  auto driver = Driver::load(kFakeDriver, &error);
  ASSERT_NE(driver, nullptr) << error;
  static const char ptx[] =
      ".version 8.0\n.target sm_80\n.address_size 64\n"
      ".visible .entry k(\n\t.param .u64 k_param_0,\n\t.param .u32 "
      "k_param_1,\n\t.param .align 8 .b8 k_param_2[16]\n)\n{\n\tret;\n}\n";
  {
    cuda::Module module;
    ASSERT_TRUE(module.load(*driver, ptx, &error, 3)) << error;
    EXPECT_EQ(fake.fn<int (*)()>("fake_cuda_last_opt_level")(), 3);
    EXPECT_EQ(module.function("nope", &error), nullptr);
    EXPECT_EQ(error, "cuModuleGetFunction(nope) failed: CUDA_ERROR_NOT_FOUND "
                     "(named symbol not found)");
    cuda::CUfunction f = module.function("k", &error);
    ASSERT_NE(f, nullptr) << error;
    cuda::Stream stream;
    ASSERT_TRUE(stream.create(*driver, &error)) << error;
    uint64_t a = 0x1122334455667788ull;
    uint32_t b = 42;
    uint8_t c[16];
    for (int i = 0; i < 16; ++i)
      c[i] = uint8_t(i);
    void *params[] = {&a, &b, c};
    ASSERT_TRUE(cuda::launch(*driver, f, {2, 3, 4}, {32, 2, 1}, 128, stream,
                             params, &error))
        << error;
    ASSERT_EQ(fake.launches(), 1);
    EXPECT_EQ(fake.kernel(0), "k");
    EXPECT_EQ(fake.dims(0), (std::vector<unsigned>{2, 3, 4, 32, 2, 1, 128}));
    EXPECT_EQ(fake.paramAs<uint64_t>(0, 0), a);
    EXPECT_EQ(fake.paramAs<uint32_t>(0, 1), b);
    EXPECT_EQ(fake.param(0, 2), std::vector<uint8_t>(c, c + 16));
    fake.fail("cuLaunchKernel", 719);
    EXPECT_FALSE(cuda::launch(*driver, f, {1, 1, 1}, {1, 1, 1}, 0, stream,
                              params, &error));
    EXPECT_EQ(error, "cuLaunchKernel failed: CUDA_ERROR_LAUNCH_FAILED "
                     "(unspecified launch failure)");
  }
  EXPECT_EQ(fake.count("fake_cuda_live_modules"), 0);

  fake.fn<void (*)(const char *)>("fake_cuda_set_jit_log")(
      "ptxas fatal: unknown directive .bogus");
  fake.fail("cuModuleLoadDataEx", 218);
  cuda::Module bad;
  EXPECT_FALSE(bad.load(*driver, ".bogus", &error));
  EXPECT_EQ(error, "cuModuleLoadDataEx failed: CUDA_ERROR_INVALID_PTX (a PTX "
                   "JIT compilation failed); JIT log: ptxas fatal: unknown "
                   "directive .bogus");
}

//===----------------------------------------------------------------------===//
// The mgpu shim, inside a CUDA step library
//===----------------------------------------------------------------------===//

namespace {
struct StepSo {
  void *handle = nullptr;
  explicit StepSo(const std::string &path) {
    handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    EXPECT_NE(handle, nullptr) << dlerror();
  }
  ~StepSo() {
    if (handle)
      dlclose(handle);
  }
  template <typename F> F fn(const char *name) {
    void *p = dlsym(handle, name);
    EXPECT_NE(p, nullptr) << name;
    return reinterpret_cast<F>(p);
  }
  std::string takeError() {
    const char *e = fn<const char *(*)()>("qcc_cuda_take_error")();
    return e ? e : "";
  }
  void call(void **args) {
    fn<void (*)(void **)>("qcc_entry_train_step")(args);
  }
};
} // namespace

TEST(Mgpu, LoadsWithoutADriverAndRecordsTheFailure) {
  EXPECT_TRUE(inFreshProcess([] {
    setenv("QCC_CUDA_DRIVER", kMissing.c_str(), 1);
    StepSo step(kFakeStep);
    ASSERT_NE(step.handle, nullptr);
    // Loading the library (its module constructor) did nothing that fails.
    EXPECT_EQ(step.takeError(), "");
    float lr = 1;
    uint8_t dummy[68] = {};
    void *args[] = {dummy, dummy, dummy, &lr, dummy, dummy, dummy};
    step.call(args); // must not crash
    std::string error = step.takeError();
    EXPECT_EQ(error.rfind("loading the step's GPU module: no CUDA driver "
                          "found: ",
                          0),
              0u)
        << error;
    EXPECT_NE(error.find(kMissing), std::string::npos) << error;
    EXPECT_EQ(step.takeError(), ""); // taken
  }));
}

TEST(Mgpu, LazyModuleAndLaunchMarshalling) {
  useFakeDriver();
  Fake fake;
  fake.reset();
  int modulesBefore = fake.count("fake_cuda_live_modules");
  std::string error;
  // The host's copy of the loader; the step library has its own.
  Driver *driver = Driver::instance(&error);
  ASSERT_NE(driver, nullptr) << error;
  {
    StepSo step(kFakeStep);
    ASSERT_NE(step.handle, nullptr);
    EXPECT_EQ(fake.calls("cuModuleLoadDataEx"), 0); // lazy
    EXPECT_EQ(fake.calls("cuModuleLoadData"), 0);

    cuda::Stream stream;
    ASSERT_TRUE(stream.create(*driver, &error)) << error;
    cuda::DeviceBuffer w, m, x, mOut, loss;
    for (auto *b : {&w, &m, &x, &mOut, &loss})
      ASSERT_TRUE(b->allocate(*driver, b == &w ? 68 : 16, &error)) << error;
    std::vector<uint8_t> blocks(68, 7);
    std::vector<float> mv = {1, 2, 3, 4}, xv = {10, 20, 30, 40};
    ASSERT_TRUE(w.upload(blocks.data(), 68, stream, &error));
    ASSERT_TRUE(m.upload(mv.data(), 16, stream, &error));
    ASSERT_TRUE(x.upload(xv.data(), 16, stream, &error));
    ASSERT_TRUE(stream.synchronize(&error));
    float lr = 0.5f;
    void *args[] = {w.get(), m.get(), x.get(), &lr,
                    w.get(), mOut.get(), loss.get()};
    step.call(args);
    EXPECT_EQ(step.takeError(), "");
    EXPECT_EQ(fake.calls("cuModuleLoadDataEx"), 1);
    EXPECT_EQ(fake.fn<int (*)()>("fake_cuda_last_opt_level")(), 2);
    EXPECT_NE(std::string(fake.fn<const char *(*)()>("fake_cuda_last_image")())
                  .find(".visible .entry qcc_fake_train("),
              std::string::npos);
    ASSERT_EQ(fake.launches(), 1);
    EXPECT_EQ(fake.kernel(0), "qcc_fake_train");
    EXPECT_EQ(fake.dims(0), (std::vector<unsigned>{1, 1, 1, 32, 1, 1, 0}));
    EXPECT_NE(fake.fn<void *(*)(int)>("fake_cuda_launch_stream")(0), nullptr);
    EXPECT_NE(fake.fn<void *(*)(int)>("fake_cuda_launch_stream")(0),
              static_cast<void *>(stream.get()));
    ASSERT_EQ(fake.fn<int (*)(int)>("fake_cuda_launch_param_count")(0), 9);
    EXPECT_EQ(fake.paramAs<uint64_t>(0, 0), w.address());
    EXPECT_EQ(fake.paramAs<uint64_t>(0, 1), m.address());
    EXPECT_EQ(fake.paramAs<uint64_t>(0, 2), x.address());
    EXPECT_EQ(fake.paramAs<float>(0, 3), 0.5f);
    EXPECT_EQ(fake.paramAs<uint32_t>(0, 4), 4u);
    EXPECT_EQ(fake.paramAs<uint32_t>(0, 5), 68u);
    EXPECT_EQ(fake.paramAs<uint64_t>(0, 6), w.address()); // in place
    EXPECT_EQ(fake.paramAs<uint64_t>(0, 7), mOut.address());
    EXPECT_EQ(fake.paramAs<uint64_t>(0, 8), loss.address());
    // The fake executed the kernel on the device buffers.
    float l = 0;
    std::vector<float> mo(4);
    ASSERT_TRUE(loss.download(&l, 4, stream, &error));
    ASSERT_TRUE(mOut.download(mo.data(), 16, stream, &error));
    ASSERT_TRUE(stream.synchronize(&error));
    EXPECT_EQ(mo, (std::vector<float>{11, 22, 33, 44}));
    EXPECT_EQ(l, 55.0f);
    // The entry's stream is gone; a second call reuses module and function.
    EXPECT_EQ(fake.count("fake_cuda_live_streams"), 1);
    step.call(args);
    EXPECT_EQ(step.takeError(), "");
    EXPECT_EQ(fake.calls("cuModuleLoadDataEx"), 1);
    EXPECT_EQ(fake.calls("cuModuleGetFunction"), 1);
    EXPECT_EQ(fake.launches(), 2);
    EXPECT_EQ(fake.count("fake_cuda_live_modules"), modulesBefore + 1);
  }
  // dlclose ran the step's destructor: mgpuModuleUnload.
  EXPECT_EQ(fake.calls("cuModuleUnload"), 1);
  EXPECT_EQ(fake.count("fake_cuda_live_modules"), modulesBefore);
}

TEST(Mgpu, FailuresAreRecordedWithTheCudaErrorString) {
  useFakeDriver();
  Fake fake;
  fake.reset();
  StepSo step(kFakeStep);
  ASSERT_NE(step.handle, nullptr);
  auto memAlloc =
      step.fn<void *(*)(uint64_t, void *, bool)>("mgpuMemAlloc");
  auto memFree = step.fn<void (*)(void *, void *)>("mgpuMemFree");
  std::vector<void *> buffers;
  for (int i = 0; i < 4; ++i)
    buffers.push_back(memAlloc(68, nullptr, false));
  float lr = 1;
  void *args[] = {buffers[0], buffers[1], buffers[2], &lr,
                  buffers[0], buffers[3], buffers[3]};

  // A module that does not JIT: its log comes with the error, and the
  // launch is skipped.
  fake.fn<void (*)(const char *)>("fake_cuda_set_jit_log")(
      "ptxas application ptx input, line 7; fatal");
  fake.fail("cuModuleLoadDataEx", 218);
  step.call(args);
  EXPECT_EQ(step.takeError(),
            "loading the step's GPU module: cuModuleLoadDataEx failed: "
            "CUDA_ERROR_INVALID_PTX (a PTX JIT compilation failed); JIT log: "
            "ptxas application ptx input, line 7; fatal");
  EXPECT_EQ(fake.launches(), 0);
  for (void *b : buffers)
    memFree(b, nullptr);
  EXPECT_EQ(step.takeError(), "");

  // With the module failed for good, every call says so.
  step.call(args);
  EXPECT_NE(step.takeError().find("the step's GPU module did not load"),
            std::string::npos);
}

TEST(Mgpu, LaunchAndSynchronizeFailures) {
  useFakeDriver();
  Fake fake;
  fake.reset();
  StepSo step(kFakeStep);
  auto memAlloc =
      step.fn<void *(*)(uint64_t, void *, bool)>("mgpuMemAlloc");
  std::vector<void *> b;
  for (int i = 0; i < 4; ++i)
    b.push_back(memAlloc(68, nullptr, false));
  float lr = 1;
  void *args[] = {b[0], b[1], b[2], &lr, b[0], b[3], b[3]};
  fake.fail("cuLaunchKernel", 719);
  step.call(args);
  EXPECT_EQ(step.takeError(), "cuLaunchKernel failed: CUDA_ERROR_LAUNCH_FAILED "
                              "(unspecified launch failure)");
  fake.fail("cuStreamSynchronize", 719);
  step.call(args);
  EXPECT_EQ(step.takeError(), "cuStreamSynchronize failed: "
                              "CUDA_ERROR_LAUNCH_FAILED (unspecified launch "
                              "failure)");
  // Only the first failure is kept until taken.
  fake.fail("cuLaunchKernel", 719);
  fake.fail("cuStreamDestroy_v2", 400);
  step.call(args);
  EXPECT_EQ(step.takeError().rfind("cuLaunchKernel failed", 0), 0u);
  EXPECT_EQ(step.takeError(), "");
  auto memFree = step.fn<void (*)(void *, void *)>("mgpuMemFree");
  for (void *p : b)
    memFree(p, nullptr);
}

TEST(Mgpu, MemoryStreamsAndEvents) {
  useFakeDriver();
  Fake fake;
  fake.reset();
  StepSo step(kFakeStep);
  auto memAlloc =
      step.fn<void *(*)(uint64_t, void *, bool)>("mgpuMemAlloc");
  auto memFree = step.fn<void (*)(void *, void *)>("mgpuMemFree");
  auto memcpy_ = step.fn<void (*)(void *, void *, size_t, void *)>("mgpuMemcpy");
  auto memset32 =
      step.fn<void (*)(void *, unsigned, size_t, void *)>("mgpuMemset32");
  auto memset16 =
      step.fn<void (*)(void *, unsigned short, size_t, void *)>("mgpuMemset16");
  auto streamCreate = step.fn<void *(*)()>("mgpuStreamCreate");
  auto streamSync = step.fn<void (*)(void *)>("mgpuStreamSynchronize");
  auto streamDestroy = step.fn<void (*)(void *)>("mgpuStreamDestroy");
  auto streamWait = step.fn<void (*)(void *, void *)>("mgpuStreamWaitEvent");
  auto eventCreate = step.fn<void *(*)()>("mgpuEventCreate");
  auto eventRecord = step.fn<void (*)(void *, void *)>("mgpuEventRecord");
  auto eventSync = step.fn<void (*)(void *)>("mgpuEventSynchronize");
  auto eventDestroy = step.fn<void (*)(void *)>("mgpuEventDestroy");
  auto setDevice = step.fn<void (*)(int32_t)>("mgpuSetDefaultDevice");

  void *s = streamCreate();
  ASSERT_NE(s, nullptr);
  void *d = memAlloc(64, s, false);
  void *managed = memAlloc(64, s, true);
  ASSERT_NE(d, nullptr);
  ASSERT_NE(managed, nullptr);
  EXPECT_EQ(fake.calls("cuMemAllocManaged"), 1);
  memset32(d, 0xdeadbeefu, 16, s);
  memcpy_(managed, d, 64, s);
  std::vector<uint32_t> host(16);
  memcpy_(host.data(), managed, 64, s);
  streamSync(s);
  EXPECT_EQ(host, std::vector<uint32_t>(16, 0xdeadbeefu));
  memset16(d, 0x1234, 32, s);
  std::vector<uint16_t> half(32);
  memcpy_(half.data(), d, 64, s);
  EXPECT_EQ(half, std::vector<uint16_t>(32, 0x1234));
  void *e = eventCreate();
  ASSERT_NE(e, nullptr);
  eventRecord(e, s);
  streamWait(s, e);
  eventSync(e);
  eventDestroy(e);
  memFree(d, s);
  memFree(managed, s);
  streamDestroy(s);
  EXPECT_EQ(step.takeError(), "");
  setDevice(0);
  EXPECT_EQ(step.takeError(), "");
  setDevice(1);
  EXPECT_NE(step.takeError().find("device 0 only"), std::string::npos);
  memset32(d, 0, 4, nullptr); // freed memory: the driver refuses
  EXPECT_EQ(step.takeError(), "cuMemsetD32Async failed: "
                              "CUDA_ERROR_INVALID_VALUE (invalid argument)");
}

TEST(Mgpu, BinaryModules) {
  useFakeDriver();
  Fake fake;
  fake.reset();
  StepSo step(kFakeStep);
  auto load = step.fn<void *(*)(void *, size_t)>("mgpuModuleLoad");
  auto get = step.fn<void *(*)(void *, const char *)>("mgpuModuleGetFunction");
  auto unload = step.fn<void (*)(void *)>("mgpuModuleUnload");
  static char image[] = ".visible .entry kern(\n.param .u64 p\n)\n{ ret; }\n";
  int modules = fake.count("fake_cuda_live_modules");
  void *m = load(image, sizeof image);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(fake.count("fake_cuda_live_modules"), modules); // lazy
  EXPECT_NE(get(m, "kern"), nullptr);
  EXPECT_EQ(step.takeError(), "");
  EXPECT_EQ(get(m, "nope"), nullptr);
  EXPECT_EQ(step.takeError(), "cuModuleGetFunction(nope) failed: "
                              "CUDA_ERROR_NOT_FOUND (named symbol not found)");
  EXPECT_EQ(fake.count("fake_cuda_live_modules"), modules + 1);
  unload(m);
  EXPECT_EQ(fake.count("fake_cuda_live_modules"), modules);
  // A module never used is never loaded, nor unloaded.
  int unloads = fake.calls("cuModuleUnload");
  unload(load(image, sizeof image));
  EXPECT_EQ(fake.calls("cuModuleUnload"), unloads);
  EXPECT_EQ(step.takeError(), "");
}

//===----------------------------------------------------------------------===//
// Sessions on the device
//===----------------------------------------------------------------------===//

namespace {
constexpr const char *kWeight = "blk.0.ffn_up.weight";

/// A model with the step's q8_0 weight (2 blocks, scale 1.0) and an f32
/// tensor the step does not use.
std::string writeModel(std::vector<uint8_t> &blocks) {
  blocks.assign(68, 0);
  for (int b = 0; b < 2; ++b) {
    blocks[34 * b] = 0x00;
    blocks[34 * b + 1] = 0x3c; // f16 1.0
    for (int i = 0; i < 32; ++i)
      blocks[34 * b + 2 + i] = uint8_t(i - 16 + b);
  }
  char dir[] = "/tmp/qcc-cuda-test-XXXXXX";
  EXPECT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/model.gguf";
  gguf::Writer writer;
  writer.set("general.architecture", gguf::Value::makeString("llama"));
  writer.addTensor(kWeight, 8, {32, 2}, blocks);
  std::vector<uint8_t> norm(16, 0);
  writer.addTensor("output_norm.weight", 0, {4}, norm);
  std::string error;
  EXPECT_TRUE(writer.write(path, &error)) << error;
  return path;
}

struct Loaded {
  std::unique_ptr<rt::StepLibrary> library;
  std::unique_ptr<gguf::File> model;
  std::unique_ptr<rt::Session> session;
};

Loaded open(const std::string &step, const std::string &modelPath,
            rt::Device device, std::string *error) {
  Loaded l;
  l.library = rt::StepLibrary::load(step, error);
  EXPECT_NE(l.library, nullptr) << *error;
  l.model = gguf::File::open(modelPath, error);
  EXPECT_NE(l.model, nullptr) << *error;
  if (l.library && l.model)
    l.session = rt::Session::create(*l.library, "train_step", *l.model, error,
                                    0, device);
  return l;
}

void setInputs(rt::Session &s, float lr) {
  std::vector<float> x = {1, 2, 3, 4};
  std::string error;
  ASSERT_TRUE(s.setArgument("x", x.data(), 16, &error)) << error;
  ASSERT_TRUE(s.setArgument("lr", &lr, 4, &error)) << error;
}

std::vector<float> floats(const std::vector<uint8_t> *bytes) {
  std::vector<float> v(bytes ? bytes->size() / 4 : 0);
  if (bytes)
    std::memcpy(v.data(), bytes->data(), bytes->size());
  return v;
}
} // namespace

TEST(CudaSession, TrainsLikeTheCpuStep) {
  useFakeDriver();
  Fake fake;
  fake.reset();
  std::vector<uint8_t> blocks;
  std::string model = writeModel(blocks), error;
  int allocationsBefore = fake.count("fake_cuda_live_allocations");
  {
    Loaded cpu = open(kFakeCpuStep, model, rt::Device::Cpu, &error);
    Loaded gpu = open(kFakeStep, model, rt::Device::Cuda, &error);
    ASSERT_NE(cpu.session, nullptr) << error;
    ASSERT_NE(gpu.session, nullptr) << error;
    EXPECT_EQ(gpu.session->device(), rt::Device::Cuda);
    EXPECT_EQ(gpu.library->target(), "cuda");
    EXPECT_EQ(gpu.library->gpuArch(), "sm_80");
    EXPECT_EQ(cpu.library->target(), "cpu");
    EXPECT_TRUE(gpu.session->resultInPlace(0));
    // The weight went up as its raw blocks.
    const std::vector<uint8_t> *w = gpu.session->argument(kWeight);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(*w, blocks);
    EXPECT_EQ(gpu.session->missingArguments(),
              (std::vector<std::string>{"x", "lr"}));
    setInputs(*cpu.session, 0.5f);
    setInputs(*gpu.session, 0.5f);
    for (int step = 1; step <= 3; ++step) {
      std::string m1, m2;
      ASSERT_EQ(cpu.session->run(&m1), rt::Session::Outcome::Applied) << m1;
      ASSERT_EQ(gpu.session->run(&m2), rt::Session::Outcome::Applied) << m2;
      EXPECT_EQ(gpu.session->scalarResult("loss"),
                cpu.session->scalarResult("loss"));
      EXPECT_EQ(gpu.session->scalarResult("loss"), 0.5f * 10 * step);
    }
    EXPECT_EQ(floats(gpu.session->argument("m")),
              (std::vector<float>{3, 6, 9, 12}));
    EXPECT_EQ(floats(gpu.session->result("m")),
              floats(cpu.session->result("m")));
    std::vector<uint8_t> trained = blocks;
    trained[2] = uint8_t(trained[2] + 3);
    EXPECT_EQ(*gpu.session->argument(kWeight), trained);
    EXPECT_EQ(*cpu.session->argument(kWeight), trained);
    EXPECT_EQ(gpu.session->steps(), 3u);

    // Every buffer the entry got was a device pointer; the weight's result
    // was its argument's buffer (in place); the scalar came by value.
    auto isDevice = fake.fn<int (*)(const void *, size_t)>("fake_cuda_is_device");
    ASSERT_EQ(fake.launches(), 3);
    for (int p : {0, 1, 2, 6, 7, 8})
      EXPECT_TRUE(isDevice(reinterpret_cast<void *>(
                               fake.paramAs<uint64_t>(0, p)),
                           4))
          << p;
    EXPECT_EQ(fake.paramAs<uint64_t>(0, 0), fake.paramAs<uint64_t>(0, 6));
    EXPECT_NE(fake.paramAs<uint64_t>(0, 1), fake.paramAs<uint64_t>(0, 7));
    EXPECT_EQ(fake.paramAs<float>(0, 3), 0.5f);
    // m and its result swap buffers after each step.
    EXPECT_EQ(fake.paramAs<uint64_t>(1, 1), fake.paramAs<uint64_t>(0, 7));
    // Inputs went up once: they did not change.
    EXPECT_EQ(fake.calls("cuMemcpyHtoDAsync_v2"), 1 + 2);

    // Saved files hold the trained values.
    std::string dir = model.substr(0, model.rfind('/'));
    ASSERT_TRUE(gpu.session->save(dir + "/trained.gguf", &error)) << error;
    auto saved = gguf::File::open(dir + "/trained.gguf", &error);
    ASSERT_NE(saved, nullptr) << error;
    const gguf::TensorInfo *t = saved->findTensor(kWeight);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(std::vector<uint8_t>(t->data, t->data + t->nbytes), trained);
  }
  EXPECT_EQ(fake.count("fake_cuda_live_allocations"), allocationsBefore);
}

TEST(CudaSession, NotInPlaceGivesTheSameValues) {
  useFakeDriver();
  Fake fake;
  fake.reset();
  std::vector<uint8_t> blocks;
  std::string model = writeModel(blocks), error;
  Loaded gpu = open(kFakeStep, model, rt::Device::Cuda, &error);
  ASSERT_NE(gpu.session, nullptr) << error;
  gpu.session->disableInPlace();
  setInputs(*gpu.session, 0.5f);
  for (int i = 0; i < 2; ++i)
    ASSERT_EQ(gpu.session->run(&error), rt::Session::Outcome::Applied) << error;
  EXPECT_NE(fake.paramAs<uint64_t>(0, 0), fake.paramAs<uint64_t>(0, 6));
  // The weight's buffers alternate.
  EXPECT_EQ(fake.paramAs<uint64_t>(1, 0), fake.paramAs<uint64_t>(0, 6));
  std::vector<uint8_t> trained = blocks;
  trained[2] = uint8_t(trained[2] + 2);
  EXPECT_EQ(*gpu.session->argument(kWeight), trained);
  EXPECT_EQ(gpu.session->scalarResult("loss"), 10.0f);
}

TEST(CudaSession, NonFiniteLossSkipsTheStep) {
  useFakeDriver();
  std::vector<uint8_t> blocks;
  std::string model = writeModel(blocks), error;
  Loaded gpu = open(kFakeStep, model, rt::Device::Cuda, &error);
  ASSERT_NE(gpu.session, nullptr) << error;
  setInputs(*gpu.session, NAN);
  EXPECT_EQ(gpu.session->run(&error), rt::Session::Outcome::Skipped);
  EXPECT_EQ(error, "step 1 was skipped: the loss is not finite");
  EXPECT_EQ(floats(gpu.session->argument("m")), std::vector<float>(4, 0));
  EXPECT_EQ(*gpu.session->argument(kWeight), blocks);
  float lr = 1;
  ASSERT_TRUE(gpu.session->setArgument("lr", &lr, 4, &error));
  EXPECT_EQ(gpu.session->run(&error), rt::Session::Outcome::Applied) << error;
  EXPECT_EQ(gpu.session->scalarResult("loss"), 10.0f);
  EXPECT_EQ(gpu.session->runs(), 2u);
  EXPECT_EQ(gpu.session->steps(), 1u);
}

TEST(CudaSession, CudaFailureFailsTheRunWithTheCudaError) {
  useFakeDriver();
  Fake fake;
  fake.reset();
  std::vector<uint8_t> blocks;
  std::string model = writeModel(blocks), error;
  Loaded gpu = open(kFakeStep, model, rt::Device::Cuda, &error);
  ASSERT_NE(gpu.session, nullptr) << error;
  setInputs(*gpu.session, 0.5f);
  fake.fail("cuLaunchKernel", 719);
  EXPECT_EQ(gpu.session->run(&error), rt::Session::Outcome::Failed);
  EXPECT_EQ(error, "step 1 failed on the GPU: cuLaunchKernel failed: "
                   "CUDA_ERROR_LAUNCH_FAILED (unspecified launch failure)");
  // An asynchronous fault shows at the context's synchronization.
  fake.fail("cuCtxSynchronize", 719);
  EXPECT_EQ(gpu.session->run(&error), rt::Session::Outcome::Failed);
  EXPECT_EQ(error, "step 2 failed on the GPU: cuCtxSynchronize after the "
                   "entry failed: CUDA_ERROR_LAUNCH_FAILED (unspecified "
                   "launch failure)");
  fake.fail("cuMemcpyHtoDAsync_v2", 2);
  float lr = 1;
  ASSERT_TRUE(gpu.session->setArgument("lr", &lr, 4, &error));
  std::vector<float> x = {1, 1, 1, 1};
  ASSERT_TRUE(gpu.session->setArgument("x", x.data(), 16, &error));
  EXPECT_EQ(gpu.session->run(&error), rt::Session::Outcome::Failed);
  EXPECT_EQ(error, "uploading 'x': cuMemcpyHtoDAsync_v2(16 bytes) failed: "
                   "CUDA_ERROR_OUT_OF_MEMORY (out of memory)");
}

TEST(CudaSession, CheckpointsResumeExactly) {
  useFakeDriver();
  std::vector<uint8_t> blocks;
  std::string model = writeModel(blocks), error;
  std::string ckpt = model.substr(0, model.rfind('/')) + "/ckpt.gguf";
  Loaded a = open(kFakeStep, model, rt::Device::Cuda, &error);
  ASSERT_NE(a.session, nullptr) << error;
  setInputs(*a.session, 0.25f);
  for (int i = 0; i < 2; ++i)
    ASSERT_EQ(a.session->run(&error), rt::Session::Outcome::Applied);
  ASSERT_TRUE(a.session->saveCheckpoint(ckpt, &error)) << error;
  ASSERT_EQ(a.session->run(&error), rt::Session::Outcome::Applied);

  // Resumed on the CPU step? Refused (another step); on the same CUDA step
  // it continues bit for bit.
  Loaded b = open(kFakeStep, model, rt::Device::Cuda, &error);
  ASSERT_NE(b.session, nullptr) << error;
  ASSERT_TRUE(b.session->loadCheckpoint(ckpt, &error)) << error;
  EXPECT_EQ(b.session->steps(), 2u);
  setInputs(*b.session, 0.25f);
  ASSERT_EQ(b.session->run(&error), rt::Session::Outcome::Applied) << error;
  EXPECT_EQ(b.session->scalarResult("loss"), a.session->scalarResult("loss"));
  EXPECT_EQ(*b.session->argument(kWeight), *a.session->argument(kWeight));
  EXPECT_EQ(*b.session->argument("m"), *a.session->argument("m"));
}

TEST(CudaSession, TargetMismatchesAreRefused) {
  useFakeDriver();
  std::vector<uint8_t> blocks;
  std::string model = writeModel(blocks), error;
  Loaded a = open(kFakeStep, model, rt::Device::Cpu, &error);
  EXPECT_EQ(a.session, nullptr);
  EXPECT_EQ(error, "the step library was compiled for CUDA (gpu_arch sm_80): "
                   "run it with --device cuda");
  Loaded b = open(kFakeCpuStep, model, rt::Device::Cuda, &error);
  EXPECT_EQ(b.session, nullptr);
  EXPECT_EQ(error, "the step library was compiled for the CPU: --device cuda "
                   "needs a step compiled with qcc --target=cuda");
}

TEST(CudaSession, NoDriverFailsCleanlyAndTheCpuStillWorks) {
  EXPECT_TRUE(inFreshProcess([] {
    setenv("QCC_CUDA_DRIVER", kMissing.c_str(), 1);
    std::vector<uint8_t> blocks;
    std::string model = writeModel(blocks), error;
    Loaded gpu = open(kFakeStep, model, rt::Device::Cuda, &error);
    EXPECT_EQ(gpu.session, nullptr);
    EXPECT_EQ(error.rfind("no CUDA driver found: ", 0), 0u) << error;
    Loaded cpu = open(kFakeCpuStep, model, rt::Device::Cpu, &error);
    ASSERT_NE(cpu.session, nullptr) << error;
    setInputs(*cpu.session, 1);
    EXPECT_EQ(cpu.session->run(&error), rt::Session::Outcome::Applied);
    EXPECT_EQ(cpu.session->scalarResult("loss"), 10.0f);
  }));
}

TEST(CudaSession, CApi) {
  useFakeDriver();
  std::vector<uint8_t> blocks;
  std::string model = writeModel(blocks);
  char *error = nullptr;
  EXPECT_EQ(qcc_session_open_device(kFakeStep.c_str(), nullptr, model.c_str(),
                                    "gpu", &error),
            nullptr);
  ASSERT_NE(error, nullptr);
  EXPECT_STREQ(error, "unknown device 'gpu' (expected cpu or cuda)");
  qcc_free_error(error);
  error = nullptr;
  EXPECT_EQ(qcc_session_open(kFakeStep.c_str(), nullptr, model.c_str(),
                             &error),
            nullptr);
  EXPECT_NE(std::string(error).find("run it with --device cuda"),
            std::string::npos);
  qcc_free_error(error);
  error = nullptr;
  qcc_session *s = qcc_session_open_device(kFakeStep.c_str(), nullptr,
                                           model.c_str(), "cuda", &error);
  ASSERT_NE(s, nullptr) << error;
  EXPECT_STREQ(qcc_session_device(s), "cuda");
  float x[4] = {1, 2, 3, 4}, lr = 2;
  ASSERT_EQ(qcc_session_set_input(s, "x", x, 16, &error), 0);
  ASSERT_EQ(qcc_session_set_input(s, "lr", &lr, 4, &error), 0);
  ASSERT_EQ(qcc_session_run(s, &error), 0) << error;
  size_t n = 0;
  const float *loss =
      static_cast<const float *>(qcc_session_result(s, "loss", &n));
  ASSERT_EQ(n, 4u);
  EXPECT_EQ(*loss, 20.0f);
  const uint8_t *w =
      static_cast<const uint8_t *>(qcc_session_argument(s, kWeight, &n));
  ASSERT_EQ(n, 68u);
  EXPECT_EQ(w[2], uint8_t(blocks[2] + 1));
  qcc_session_close(s);
}

//===----------------------------------------------------------------------===//
// On a real GPU (skipped without libcuda.so.1 and a device)
//===----------------------------------------------------------------------===//

TEST(CudaRealGpu, FakeStepTrainsLikeTheCpu) {
  if (!std::getenv("QCC_CUDA_TEST_CHILD")) {
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h)
      GTEST_SKIP() << "no libcuda.so.1 here";
    dlclose(h);
  }
  EXPECT_TRUE(inFreshProcess([] {
    unsetenv("QCC_CUDA_DRIVER");
    std::string error;
    Driver *driver = Driver::instance(&error);
    if (!driver)
      GTEST_SKIP() << error;
    std::printf("device 0: %s (%s)\n", driver->deviceName().c_str(),
                driver->computeCapability().c_str());
    std::vector<uint8_t> blocks;
    std::string model = writeModel(blocks);
    Loaded cpu = open(kFakeCpuStep, model, rt::Device::Cpu, &error);
    Loaded gpu = open(kFakeStep, model, rt::Device::Cuda, &error);
    ASSERT_NE(cpu.session, nullptr) << error;
    ASSERT_NE(gpu.session, nullptr) << error;
    setInputs(*cpu.session, 0.5f);
    setInputs(*gpu.session, 0.5f);
    for (int step = 1; step <= 3; ++step) {
      ASSERT_EQ(cpu.session->run(&error), rt::Session::Outcome::Applied)
          << error;
      ASSERT_EQ(gpu.session->run(&error), rt::Session::Outcome::Applied)
          << error;
      EXPECT_EQ(gpu.session->scalarResult("loss"), 0.5f * 10 * step);
    }
    EXPECT_EQ(*gpu.session->argument("m"), *cpu.session->argument("m"));
    EXPECT_EQ(*gpu.session->argument(kWeight), *cpu.session->argument(kWeight));
    float lr = NAN;
    ASSERT_TRUE(gpu.session->setArgument("lr", &lr, 4, &error));
    EXPECT_EQ(gpu.session->run(&error), rt::Session::Outcome::Skipped);
    EXPECT_EQ(*gpu.session->argument(kWeight), *cpu.session->argument(kWeight));
  }));
}
