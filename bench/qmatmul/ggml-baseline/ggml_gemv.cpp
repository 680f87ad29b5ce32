// A C ABI over ggml's CPU backend for one matrix product y = x·Wᵀ, so that the
// GEMV benchmark (../gemv-vs-ggml) can time ggml next to qcc in one process,
// on the same weight blocks and the same activations.
//
// W arrives as GGUF blocks (M rows of K elements, ggml's own block layout),
// x as N rows of K floats. With `repack` the weight is placed in the CPU
// backend's extra buffer type "CPU_REPACK", where ggml converts it to the
// interleaved layout that llama.cpp uses by default on this CPU for some
// formats; otherwise it lives in a plain CPU buffer and ggml's mul_mat runs
// its vec_dot kernels (the path test-backend-ops measures).
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

#include <cstdio>
#include <cstring>
#include <string>

namespace {

struct Gemv {
  ggml_backend_t backend = nullptr;
  ggml_context *weightCtx = nullptr, *ctx = nullptr;
  ggml_backend_buffer_t weightBuf = nullptr, buf = nullptr;
  ggml_cgraph *graph = nullptr;
  ggml_tensor *w = nullptr, *x = nullptr, *y = nullptr;
  std::string weightBufferType;

  ~Gemv() {
    if (buf) ggml_backend_buffer_free(buf);
    if (weightBuf) ggml_backend_buffer_free(weightBuf);
    if (ctx) ggml_free(ctx);
    if (weightCtx) ggml_free(weightCtx);
    if (backend) ggml_backend_free(backend);
  }
};

void setError(char *err, size_t len, const std::string &msg) {
  if (err && len) snprintf(err, len, "%s", msg.c_str());
}

ggml_backend_buffer_type_t repackBufferType(ggml_backend_t backend) {
  ggml_backend_dev_t dev = ggml_backend_get_device(backend);
  ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
  auto getExtra = (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(
      reg, "ggml_backend_dev_get_extra_bufts");
  if (!getExtra) return nullptr;
  for (ggml_backend_buffer_type_t *t = getExtra(dev); t && *t; ++t)
    if (std::strcmp(ggml_backend_buft_name(*t), "CPU_REPACK") == 0) return *t;
  return nullptr;
}

} // namespace

extern "C" {

// Returns a handle, or null with a message in `err`.
void *qcc_ggml_gemv_new(const char *typeName, int64_t m, int64_t k, int64_t n,
                        int threads, int repack, const void *blocks,
                        char *err, size_t errLen) {
  ggml_type type = GGML_TYPE_COUNT;
  for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
    const char *name = ggml_type_name((ggml_type)t);
    if (name && std::strcmp(name, typeName) == 0) type = (ggml_type)t;
  }
  if (type == GGML_TYPE_COUNT) {
    setError(err, errLen, std::string("ggml has no type ") + typeName);
    return nullptr;
  }
  auto *g = new Gemv;
  g->backend = ggml_backend_cpu_init();
  ggml_backend_cpu_set_n_threads(g->backend, threads);

  ggml_init_params wp{ggml_tensor_overhead(), nullptr, /*no_alloc=*/true};
  g->weightCtx = ggml_init(wp);
  g->w = ggml_new_tensor_2d(g->weightCtx, type, k, m);
  ggml_backend_buffer_type_t wbt = ggml_backend_cpu_buffer_type();
  if (repack) {
    wbt = repackBufferType(g->backend);
    if (!wbt) {
      setError(err, errLen, "this ggml build has no CPU_REPACK buffer type");
      delete g;
      return nullptr;
    }
  }
  g->weightBuf = ggml_backend_alloc_ctx_tensors_from_buft(g->weightCtx, wbt);
  if (!g->weightBuf) {
    setError(err, errLen, "allocating the weight failed");
    delete g;
    return nullptr;
  }
  g->weightBufferType = ggml_backend_buft_name(wbt);

  ggml_init_params p{4 * ggml_tensor_overhead() + ggml_graph_overhead(), nullptr,
                     /*no_alloc=*/true};
  g->ctx = ggml_init(p);
  g->x = ggml_new_tensor_2d(g->ctx, GGML_TYPE_F32, k, n);
  g->y = ggml_mul_mat(g->ctx, g->w, g->x);
  g->graph = ggml_new_graph(g->ctx);
  ggml_build_forward_expand(g->graph, g->y);
  // As llama.cpp does: a weight goes to CPU_REPACK only where that buffer
  // type has a kernel for the product (which depends on format and CPU).
  if (repack && !ggml_backend_dev_supports_op(ggml_backend_get_device(g->backend), g->y)) {
    setError(err, errLen, std::string("ggml has no repacked kernel for ") +
                              typeName + " on this CPU");
    delete g;
    return nullptr;
  }
  ggml_backend_tensor_set(g->w, blocks, 0, ggml_nbytes(g->w));
  g->buf = ggml_backend_alloc_ctx_tensors(g->ctx, g->backend);
  if (!g->buf) {
    setError(err, errLen, "allocating the activations failed");
    delete g;
    return nullptr;
  }
  return g;
}

// The buffer type the weight was placed in ("CPU" or "CPU_REPACK").
const char *qcc_ggml_gemv_weight_buffer(void *h) {
  return static_cast<Gemv *>(h)->weightBufferType.c_str();
}

void qcc_ggml_gemv_set_x(void *h, const float *x) {
  auto *g = static_cast<Gemv *>(h);
  ggml_backend_tensor_set(g->x, x, 0, ggml_nbytes(g->x));
}

// One product; returns 0 on success.
int qcc_ggml_gemv_compute(void *h) {
  auto *g = static_cast<Gemv *>(h);
  return ggml_backend_graph_compute(g->backend, g->graph) == GGML_STATUS_SUCCESS
             ? 0
             : 1;
}

// y is N rows of M floats.
void qcc_ggml_gemv_get_y(void *h, float *y) {
  auto *g = static_cast<Gemv *>(h);
  ggml_backend_tensor_get(g->y, y, 0, ggml_nbytes(g->y));
}

void qcc_ggml_gemv_free(void *h) { delete static_cast<Gemv *>(h); }

} // extern "C"
