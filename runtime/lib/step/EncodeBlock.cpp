//===- EncodeBlock.cpp - qcc_rt_encode_block for host code ----------------===//
//
// One block at a time, for code that re-encodes blocks inside its own loops
// (the kernel form of qcc.carry_update): the host build of the function the
// CUDA target links as device bitcode (DeviceEncoders.cu).
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/StepRuntime.h"

#include "EncodeCommon.h"

#include "EncodeBlock.inc"
