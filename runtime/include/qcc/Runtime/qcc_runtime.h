/*===- qcc_runtime.h - C API of the qcc runtime --------------------*- C -*-===//
 *
 * Run a compiled step library (docs/runtime.md) over a GGUF model from C or
 * any language with a C FFI: the same binding, checks and training loop as
 * qcc-run (docs/qcc-run.md), in libqcc_runtime.so. Functions that can fail
 * return 0 on success or non-zero and, when `error` is not null, a message
 * in `*error` that the caller frees with qcc_free_error().
 *
 *===----------------------------------------------------------------------===*/

#ifndef QCC_RUNTIME_QCC_RUNTIME_H
#define QCC_RUNTIME_QCC_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define QCC_RUNTIME_API __attribute__((visibility("default")))
#else
#define QCC_RUNTIME_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qcc_session qcc_session;

/* Loads `step_path`, opens `model_path` read-only and binds entry `entry`
 * (null: the library's only entry, or "train_step"). Null on failure. */
QCC_RUNTIME_API qcc_session *qcc_session_open(const char *step_path, const char *entry,
                              const char *model_path, char **error);

/* As qcc_session_open, on `device`: "cpu" (or null) or "cuda" (device 0
 * of the CUDA driver, loaded at run time; docs/runtime.md#cuda). The step
 * must have been compiled for that target. With "cuda", arguments live in
 * device memory and the values this API returns are copied back when asked
 * for; without a driver this fails with "no CUDA driver found: ...". */
QCC_RUNTIME_API qcc_session *qcc_session_open_device(const char *step_path,
                                                     const char *entry,
                                                     const char *model_path,
                                                     const char *device,
                                                     char **error);

/* "cpu" or "cuda". */
QCC_RUNTIME_API const char *qcc_session_device(const qcc_session *session);

/* Sets an input or state argument from `bytes` raw bytes. */
QCC_RUNTIME_API int qcc_session_set_input(qcc_session *session, const char *name,
                          const void *data, size_t bytes, char **error);

/* One call of the entry; results replace the arguments of the same name.
 * Returns 0 when the step was applied, 2 when it produced non-finite values
 * and was skipped (weights and state unchanged; `*error` says why), 1 when
 * it could not run. */
QCC_RUNTIME_API int qcc_session_run(qcc_session *session, char **error);

/* The latest value of result `name` (valid until the next run), or null. */
QCC_RUNTIME_API const void *qcc_session_result(const qcc_session *session, const char *name,
                               size_t *bytes);

/* Steps run so far. */
QCC_RUNTIME_API uint64_t qcc_session_steps(const qcc_session *session);

/* Writes the model with its trained weights to `path`, atomically. */
QCC_RUNTIME_API int qcc_session_save(const qcc_session *session, const char *path,
                     char **error);

/* The current value of argument `name` (a trainable weight, param, state or
 * input; valid until the next call that changes the session), or null. */
QCC_RUNTIME_API const void *qcc_session_argument(const qcc_session *session,
                                 const char *name, size_t *bytes);

/* Runs applied so far, and attempted (skipped ones included). */
QCC_RUNTIME_API uint64_t qcc_session_runs(const qcc_session *session);

/* Results the step library marks in-place (docs/runtime.md) are written
 * straight into their arguments' buffers: one copy of each trainable
 * weight and state instead of two. This turns that off (before the first
 * run), e.g. to compare. */
QCC_RUNTIME_API void qcc_session_disable_in_place(qcc_session *session);

/* Re-seeds the session's RNG (splitmix64; seed 0 at open) and draws the
 * params (qcc.role "param") again from it. Only before the first run. */
QCC_RUNTIME_API int qcc_session_seed(qcc_session *session, uint64_t seed,
                     char **error);

/* The next 64 random bits of the session's RNG, for the host's own sampling
 * (its state is part of checkpoints). */
QCC_RUNTIME_API uint64_t qcc_session_random(qcc_session *session);

/* Checkpoints (docs/qcc-run.md): trainable weights, params, state, step and
 * run counters and the RNG state, written atomically; loading checks that
 * the checkpoint belongs to this entry, step library and model, and
 * changes nothing when it does not. */
QCC_RUNTIME_API int qcc_session_save_checkpoint(const qcc_session *session,
                                const char *path, char **error);
QCC_RUNTIME_API int qcc_session_load_checkpoint(qcc_session *session,
                                const char *path, char **error);

/* LoRA: the adapter in llama.cpp's GGUF layout (loads with --lora), and the
 * model with W + (alpha/r)·B·A re-encoded in each base's own format. */
QCC_RUNTIME_API int qcc_session_save_lora(const qcc_session *session,
                          const char *path, char **error);
QCC_RUNTIME_API int qcc_session_save_merged(const qcc_session *session,
                            const char *path, char **error);

/* Data parallelism (docs/distributed.md). A process started by an MPI
 * launcher (mpirun) is one rank of a job; qcc_dist_init joins it (MPI_Init,
 * once) and gives this process's rank and the job's size; a process started
 * otherwise is rank 0 of 1, without MPI. Sessions of steps built for N ranks
 * join the job themselves and need exactly N. */
QCC_RUNTIME_API int qcc_dist_init(int *rank, int *size, char **error);
/* Every rank's `bytes` of `src`, rank order, into `dst` (size x bytes); all
 * ranks must call it. A rank that cannot reach the others ends the job. */
QCC_RUNTIME_API int qcc_dist_all_gather(const void *src, void *dst,
                                        size_t bytes, char **error);
/* Bytes this rank has received from the others so far (steps included). */
QCC_RUNTIME_API uint64_t qcc_dist_bytes_received(void);
/* Ends every rank of the job with exit status `code` (MPI_Abort). */
QCC_RUNTIME_API void qcc_dist_abort(int code);
/* MPI_Finalize where qcc_dist_init started MPI; call once at the end. */
QCC_RUNTIME_API void qcc_dist_finalize(void);
/* Compares the trainable weights, params and state of every rank's session
 * (a hash each; all ranks call it): 0 when identical, else 1 and `*error`
 * names the first tensor that differs and the rank. */
QCC_RUNTIME_API int qcc_session_check_replicas(const qcc_session *session,
                                               char **error);
/* 16 hex digits identifying the bound model (tensor table and data ends). */
QCC_RUNTIME_API const char *qcc_session_model_fingerprint(const qcc_session *session);

/* Profiling a step compiled with qcc --profile (docs/qcc-run.md#profiling):
 * the per-kernel counters as JSON (null when the step is not profiled;
 * valid until the next profile call; `reset` zeroes them), the table a host
 * prints (`wall_seconds`: the steps' time, 0 to leave that column out),
 * tracing up to `max_events` calls from now (0: off), and the calls traced
 * written as a Chrome trace. */
QCC_RUNTIME_API const char *qcc_session_profile(qcc_session *session, int reset);
QCC_RUNTIME_API const char *qcc_session_profile_table(qcc_session *session,
                                                      double wall_seconds);
QCC_RUNTIME_API void qcc_session_profile_trace(qcc_session *session,
                                               int64_t max_events);
QCC_RUNTIME_API int qcc_session_write_profile_trace(qcc_session *session,
                                                    const char *path,
                                                    char **error);

QCC_RUNTIME_API void qcc_session_close(qcc_session *session);
QCC_RUNTIME_API void qcc_free_error(char *error);

#ifdef __cplusplus
}
#endif

#endif /* QCC_RUNTIME_QCC_RUNTIME_H */
