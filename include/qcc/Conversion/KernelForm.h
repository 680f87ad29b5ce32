//===- KernelForm.h - The device-neutral kernel form ------------*- C++ -*-===//
//
// The kernel form is how qcc writes an op that must run on a GPU as plain
// scf loops on memrefs, so that the very same IR can also be lowered to CPU
// loops and checked there against the CPU reference:
//
//  - a *grid*: an `scf.parallel` with lower bounds 0 and steps 1 (at most
//    three dimensions), carrying `qcc.kernel_threads = T : i64`. Each
//    iteration is one thread block of T threads;
//  - directly in the grid's body: `memref.alloca`s of static shape (buffers
//    shared by the block's threads: GPU shared memory), code that every
//    thread may run redundantly (index arithmetic, `scf.for`/`scf.if` whose
//    bodies follow the same rules), and *phases*;
//  - a *phase*: a 1-D `scf.parallel` from 0 with step 1 carrying
//    `qcc.thread_phase = T : i64` (the grid's T again). Its iterations are spread over the
//    block's threads (thread t runs iterations t, t+T, ...) and all of
//    them finish before the next statement (a barrier). Phase bodies are
//    per-thread code: they may read anything, write only what no other
//    iteration of the same phase reads or writes, and allocate private
//    scratch.
//
// On the CPU the grid becomes an OpenMP loop and each phase a sequential
// loop, which runs the same statements in an order the GPU may also choose.
// `qcc-kernels-to-gpu` maps grids to gpu.launch (block ids, thread ids,
// workgroup buffers, gpu.barrier after each phase).
//
// Canonicalization drops grid dimensions of one iteration (and with them
// the grid's attribute), or the whole grid when it has one block, so the
// CUDA pipeline maps grids before it canonicalizes. Should a grid meet a
// canonicalizer first all the same: a parallel loop with phases inside is a
// grid, and a phase left on its own runs as a kernel of its own (one
// iteration per thread; the kernel boundary is its barrier, its buffers are
// device memory).
//
//===----------------------------------------------------------------------===//

#ifndef QCC_CONVERSION_KERNELFORM_H
#define QCC_CONVERSION_KERNELFORM_H

#include "llvm/ADT/StringRef.h"

namespace mlir::qcc {

/// i64 attribute on a grid: threads per block.
constexpr llvm::StringLiteral kKernelThreadsAttr = "qcc.kernel_threads";
/// i64 attribute on the phases of a grid: threads per block.
constexpr llvm::StringLiteral kThreadPhaseAttr = "qcc.thread_phase";

} // namespace mlir::qcc

#endif // QCC_CONVERSION_KERNELFORM_H
