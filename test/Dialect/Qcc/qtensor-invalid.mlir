// RUN: qcc-opt %s -split-input-file -verify-diagnostics
// One case per !qcc.qtensor verifier message, and the parser's errors.

// A rank above four is not a GGUF tensor.
// expected-error @below {{qtensor rank must be between 1 and 4 (GGUF tensors have at most four dimensions), got 5}}
func.func private @rank5(!qcc.qtensor<1x1x1x1x32xq8_0>)

// -----

// The innermost dimension must hold whole blocks.
// expected-error @below {{qtensor innermost dimension 100 is not a multiple of the 'q4_K' block length 256}}
func.func private @partial_block(!qcc.qtensor<4x100xq4_K>)

// -----

// A blocked format needs a static innermost dimension.
// expected-error @below {{qtensor of format 'q4_0' needs a static innermost dimension (blocks of 32 elements)}}
func.func private @dynamic_inner(!qcc.qtensor<4x?xq4_0>)

// -----

// Format names are ggml's spellings; case matters (q4_K, not q4_k).
// expected-error @below {{unknown GGUF block format 'q4_k'}}
func.func private @bad_format(!qcc.qtensor<256xq4_k>)

// -----

// A removed ggml type (Q4_2) is not a format.
// expected-error @below {{unknown GGUF block format 'q4_2'}}
func.func private @removed_format(!qcc.qtensor<32xq4_2>)
