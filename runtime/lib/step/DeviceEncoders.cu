//===- DeviceEncoders.cu - The block encoders as NVPTX bitcode ------------===//
//
// Compiled by clang in CUDA device-only mode (never by nvcc, never linked
// into a host binary) into qcc_device_encoders.bc, which the CUDA target
// links into the GPU module of every step that re-encodes blocks. The
// runtime's own encoder sources are made __host__ __device__ wholesale; the
// standard headers come first so that they keep their CUDA declarations.
// Built with -ffp-contract=off, like the host build, so both give the same
// bits.
//
//===----------------------------------------------------------------------===//

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#pragma clang force_cuda_host_device begin
#include "qcc/Runtime/StepRuntime.h"
#include "Half.cpp"
#include "EncodeLegacy.cpp"
#include "EncodeKQuants.cpp"
#include "Codebooks.cpp"
#include "EncodeMisc.cpp"
#include "EncodeIQ.cpp"
#include "EncodeBlock.inc"
#pragma clang force_cuda_host_device end
