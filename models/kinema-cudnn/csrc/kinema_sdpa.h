// C API of Kinema's cuDNN fused attention shim (see ../README.md).
//
// Every function returns a kinema_sdpa_status and, on failure, writes a NUL-terminated
// message into `err` (at most `err_len` bytes). Nothing here aborts or throws.
#ifndef KINEMA_SDPA_H
#define KINEMA_SDPA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    KINEMA_SDPA_OK = 0,
    // cuDNN has no engine for this shape/dtype/layout: use another attention path.
    KINEMA_SDPA_UNSUPPORTED = 1,
    // cuDNN or CUDA failed while building or running the plan.
    KINEMA_SDPA_CUDNN_ERROR = 2,
    KINEMA_SDPA_CUDA_ERROR = 3,
    // Bad arguments or an unexpected C++ exception.
    KINEMA_SDPA_INTERNAL = 4,
} kinema_sdpa_status;

typedef enum {
    KINEMA_SDPA_F16 = 0,
    KINEMA_SDPA_BF16 = 1,
} kinema_sdpa_dtype;

// softmax(q k^T * scale) v, without masks, over q: [b, h, lq, d] and k, v: [b, h, lk, d].
// Strides are in elements, in [b, h, l, d] order (the d stride must be 1). The output
// is written contiguous [b, h, lq, d] in the same dtype.
typedef struct {
    int64_t b, h, lq, lk, d;
    int64_t q_stride[4];
    int64_t k_stride[4];
    int64_t v_stride[4];
    int32_t dtype;  // kinema_sdpa_dtype
    float scale;
} kinema_sdpa_params;

// Builds (or finds in the cache) the execution plan for `p` on the current CUDA device
// and returns the workspace it needs in bytes.
int kinema_sdpa_prepare(const kinema_sdpa_params* p, uint64_t* workspace_bytes, char* err,
                        size_t err_len);

// Enqueues the attention on `stream` (a cudaStream_t / CUstream). `workspace` must hold
// at least the bytes kinema_sdpa_prepare returned (may be NULL when that is 0).
int kinema_sdpa_run(const kinema_sdpa_params* p, const void* q, const void* k, const void* v,
                    void* o, void* workspace, uint64_t workspace_bytes, void* stream, char* err,
                    size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
