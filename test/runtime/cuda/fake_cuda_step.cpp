//===- fake_cuda_step.cpp - A hand-written step library, for tests --------===//
//
// Stands in for what `qcc --target=cuda` will produce until the compiler
// side exists: a manifest with "target": "cuda", an entry that is host code
// calling MLIR's mgpu* functions the way gpu-to-llvm output does (a global
// constructor mgpuModuleLoadJIT's the embedded PTX, a destructor unloads it;
// each call gets the function, creates a stream, launches, synchronizes and
// destroys the stream), linked with libqcc_cuda_mgpu.a.
//
// Built with QCC_FAKE_CPU_STEP, the same entry runs the computation on the
// host and the manifest has no "target": a CPU step with the same ABI, to
// compare with and to test target mismatches.
//
// The step: train_step(w: q8_0 [2, 32] weight, m: f32 [4] state,
// x: f32 [4] input, lr: f32 scalar input) -> (w in place, m, loss), where
// m' = m + x, loss = lr * sum(m'), and when the loss is finite w' is w with
// its third byte (the first quant of block 0) plus one. The fake driver
// executes the kernel `qcc_fake_train` the same way on the host.
//
//===----------------------------------------------------------------------===//

#include <cmath>
#include <cstdint>
#include <cstring>

#ifndef QCC_FAKE_CPU_STEP
#include "qcc/Runtime/CudaStepRuntime.h"
#endif

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace {
constexpr uint32_t kN = 4, kWeightBytes = 68; // 2 q8_0 blocks of 34 bytes

#ifdef QCC_FAKE_CPU_STEP
#define QCC_FAKE_TARGET ""
#else
#define QCC_FAKE_TARGET R"("target": "cuda", "gpu_arch": "sm_80",)"
#endif

const char *kManifest = R"({"qcc_abi": 1, )" QCC_FAKE_TARGET R"(
  "entries": [{
    "name": "train_step", "symbol": "qcc_entry_train_step",
    "args": [
      {"index": 0, "name": "blk.0.ffn_up.weight", "role": "weight",
       "kind": "qtensor", "format": "q8_0", "ggml_type": 8,
       "shape": [2, 32], "bytes": 68},
      {"index": 1, "name": "m", "role": "state", "kind": "tensor",
       "dtype": "f32", "shape": [4], "bytes": 16},
      {"index": 2, "name": "x", "role": "input", "kind": "tensor",
       "dtype": "f32", "shape": [4], "bytes": 16},
      {"index": 3, "name": "lr", "role": "input", "kind": "scalar",
       "dtype": "f32", "shape": [], "bytes": 4}],
    "results": [
      {"index": 0, "name": "blk.0.ffn_up.weight", "role": "output",
       "kind": "qtensor", "format": "q8_0", "ggml_type": 8,
       "shape": [2, 32], "bytes": 68, "inplace": true},
      {"index": 1, "name": "m", "role": "output", "kind": "tensor",
       "dtype": "f32", "shape": [4], "bytes": 16},
      {"index": 2, "name": "loss", "role": "output", "kind": "tensor",
       "dtype": "f32", "shape": [], "bytes": 4}]
  }]
})";
} // namespace

EXPORT const char *qcc_step_manifest(void) { return kManifest; }

#ifndef QCC_FAKE_CPU_STEP
// What gpu-to-llvm embeds for a gpu.binary in PTX format (NUL-terminated).
// A real kernel, so that this step also runs on a GPU (CudaRealGpu tests):
// `nvcc -ptx -arch=sm_80 -O2` (CUDA 13.0) of
//
//   extern "C" __global__ void qcc_fake_train(const unsigned char *w,
//       const float *m, const float *x, float lr, unsigned n,
//       unsigned wbytes, unsigned char *w_out, float *m_out, float *loss) {
//     if (threadIdx.x != 0 || blockIdx.x != 0) return;
//     float sum = 0;
//   #pragma unroll 1
//     for (unsigned i = 0; i < n; ++i) {
//       float v = m[i] + x[i]; m_out[i] = v; sum += v;
//     }
//     float l = lr * sum;
//     *loss = l;
//     if (isfinite(l)) {
//   #pragma unroll 1
//       for (unsigned i = 0; i < wbytes; ++i) w_out[i] = w[i];
//       w_out[2] = (unsigned char)(w_out[2] + 1);
//     }
//   }
//
// with `.version` lowered from 9.0 to 7.0 (the lowest sm_80 accepts, so
// that older drivers JIT it); ptxas accepts it for sm_80 and sm_90. The
// fake driver executes the same computation on the host.
static const char kPtx[] = R"(.version 7.0
.target sm_80
.address_size 64

	// .globl	qcc_fake_train

.visible .entry qcc_fake_train(
	.param .u64 qcc_fake_train_param_0,
	.param .u64 qcc_fake_train_param_1,
	.param .u64 qcc_fake_train_param_2,
	.param .f32 qcc_fake_train_param_3,
	.param .u32 qcc_fake_train_param_4,
	.param .u32 qcc_fake_train_param_5,
	.param .u64 qcc_fake_train_param_6,
	.param .u64 qcc_fake_train_param_7,
	.param .u64 qcc_fake_train_param_8
)
{
	.reg .pred 	%p<7>;
	.reg .b16 	%rs<4>;
	.reg .f32 	%f<14>;
	.reg .b32 	%r<14>;
	.reg .b64 	%rd<28>;


	ld.param.u64 	%rd16, [qcc_fake_train_param_0];
	ld.param.u64 	%rd17, [qcc_fake_train_param_1];
	ld.param.u64 	%rd18, [qcc_fake_train_param_2];
	ld.param.f32 	%f4, [qcc_fake_train_param_3];
	ld.param.u32 	%r5, [qcc_fake_train_param_4];
	ld.param.u32 	%r6, [qcc_fake_train_param_5];
	ld.param.u64 	%rd21, [qcc_fake_train_param_6];
	ld.param.u64 	%rd19, [qcc_fake_train_param_7];
	ld.param.u64 	%rd20, [qcc_fake_train_param_8];
	cvta.to.global.u64 	%rd1, %rd21;
	mov.u32 	%r7, %ctaid.x;
	mov.u32 	%r8, %tid.x;
	or.b32  	%r9, %r7, %r8;
	setp.ne.s32 	%p1, %r9, 0;
	@%p1 bra 	$L__BB0_9;

	setp.eq.s32 	%p2, %r5, 0;
	mov.f32 	%f13, 0f00000000;
	@%p2 bra 	$L__BB0_4;

	cvta.to.global.u64 	%rd25, %rd19;
	cvta.to.global.u64 	%rd24, %rd18;
	cvta.to.global.u64 	%rd23, %rd17;
	mov.f32 	%f13, 0f00000000;
	mov.u32 	%r12, 0;

$L__BB0_3:
	.pragma "nounroll";
	ld.global.f32 	%f7, [%rd24];
	ld.global.f32 	%f8, [%rd23];
	add.f32 	%f9, %f8, %f7;
	st.global.f32 	[%rd25], %f9;
	add.f32 	%f13, %f13, %f9;
	add.s64 	%rd25, %rd25, 4;
	add.s64 	%rd24, %rd24, 4;
	add.s64 	%rd23, %rd23, 4;
	add.s32 	%r12, %r12, 1;
	setp.lt.u32 	%p3, %r12, %r5;
	@%p3 bra 	$L__BB0_3;

$L__BB0_4:
	mul.f32 	%f10, %f13, %f4;
	cvta.to.global.u64 	%rd22, %rd20;
	st.global.f32 	[%rd22], %f10;
	abs.f32 	%f11, %f10;
	setp.geu.f32 	%p4, %f11, 0f7F800000;
	@%p4 bra 	$L__BB0_9;

	setp.eq.s32 	%p5, %r6, 0;
	@%p5 bra 	$L__BB0_8;

	cvta.to.global.u64 	%rd26, %rd16;
	mov.u32 	%r13, 0;
	mov.u64 	%rd27, %rd1;

$L__BB0_7:
	.pragma "nounroll";
	ld.global.u8 	%rs1, [%rd26];
	st.global.u8 	[%rd27], %rs1;
	add.s64 	%rd27, %rd27, 1;
	add.s64 	%rd26, %rd26, 1;
	add.s32 	%r13, %r13, 1;
	setp.lt.u32 	%p6, %r13, %r6;
	@%p6 bra 	$L__BB0_7;

$L__BB0_8:
	ld.global.u8 	%rs2, [%rd1+2];
	add.s16 	%rs3, %rs2, 1;
	st.global.u8 	[%rd1+2], %rs3;

$L__BB0_9:
	ret;

}
)";

static void *gModule = nullptr;

__attribute__((constructor)) static void loadModule() {
  gModule = mgpuModuleLoadJIT(const_cast<char *>(kPtx), 2);
}

__attribute__((destructor)) static void unloadModule() {
  mgpuModuleUnload(gModule);
}

EXPORT void qcc_entry_train_step(void **args) {
  void *w = args[0], *m = args[1], *x = args[2];
  float lr = *static_cast<float *>(args[3]); // scalars: host pointers
  void *wOut = args[4], *mOut = args[5], *loss = args[6];
  uint32_t n = kN, wbytes = kWeightBytes;
  void *f = mgpuModuleGetFunction(gModule, "qcc_fake_train");
  void *stream = mgpuStreamCreate();
  void *params[] = {&w, &m, &x, &lr, &n, &wbytes, &wOut, &mOut, &loss};
  mgpuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, stream, params, nullptr, 9);
  mgpuStreamSynchronize(stream);
  mgpuStreamDestroy(stream);
}

#else // QCC_FAKE_CPU_STEP

EXPORT void qcc_entry_train_step(void **args) {
  const uint8_t *w = static_cast<uint8_t *>(args[0]);
  const float *m = static_cast<float *>(args[1]);
  const float *x = static_cast<float *>(args[2]);
  float lr = *static_cast<float *>(args[3]);
  uint8_t *wOut = static_cast<uint8_t *>(args[4]);
  float *mOut = static_cast<float *>(args[5]);
  float sum = 0;
  for (uint32_t i = 0; i < kN; ++i) {
    mOut[i] = m[i] + x[i];
    sum += mOut[i];
  }
  float loss = lr * sum;
  std::memcpy(args[6], &loss, 4);
  if (std::isfinite(loss)) {
    std::memmove(wOut, w, kWeightBytes);
    wOut[2] = uint8_t(wOut[2] + 1);
  }
}

#endif
