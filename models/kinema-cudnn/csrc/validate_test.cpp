// A GPU-less check of the shim, run by scripts/check-cuda: the cuDNN frontend accepts
// the attention graph for the models' shapes and layouts, and the C API reports errors
// instead of aborting on a machine without a GPU.
//
// The frontend's SDPA validation reads the device's compute capability through
// cudaGetDevice/cudaGetDeviceProperties: this program defines both (an executable's
// definitions take precedence over libcudart's) to describe an H100 (sm_90, 132 SMs),
// so validate() runs its real checks here. Nothing else reaches the fake device:
// cudnnCreate still fails without a driver.
//
//   g++ -std=c++17 -DCUDNN_FRONTEND_SKIP_JSON_LIB -I... validate_test.cpp -lcudnn -lcudart
#include "sdpa.cpp"

#include <cstdio>

extern "C" cudaError_t cudaGetDevice(int* device) {
    *device = 0;
    return cudaSuccess;
}

extern "C" cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
    *prop = cudaDeviceProp{};
    std::snprintf(prop->name, sizeof prop->name, "fake H100 (validate_test)");
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 132;
    prop->sharedMemPerBlockOptin = 227 * 1024;
    return cudaSuccess;
}

namespace {

// [B, H, L, D] views of a [B, L, H * D] projection (Wan's q/k/v before the transpose).
kinema_sdpa_params wan(int64_t b, int64_t h, int64_t lq, int64_t lk, int64_t d, int32_t dtype) {
    kinema_sdpa_params p{};
    p.b = b, p.h = h, p.lq = lq, p.lk = lk, p.d = d, p.dtype = dtype;
    int64_t q[4] = {lq * h * d, d, h * d, 1};
    int64_t kv[4] = {lk * h * d, d, h * d, 1};
    for (int i = 0; i < 4; ++i) {
        p.q_stride[i] = q[i];
        p.k_stride[i] = kv[i];
        p.v_stride[i] = kv[i];
    }
    p.scale = 1.0f / std::sqrt(static_cast<float>(d));
    return p;
}

}  // namespace

int main() {
    int failures = 0;
    struct Case {
        const char* name;
        kinema_sdpa_params p;
    } cases[] = {
        {"1.3B self 480p x 81, bf16", wan(2, 12, 32760, 32760, 128, KINEMA_SDPA_BF16)},
        {"1.3B text cross, bf16", wan(2, 12, 32760, 512, 128, KINEMA_SDPA_BF16)},
        {"I2V image cross (257), bf16", wan(1, 40, 32760, 257, 128, KINEMA_SDPA_BF16)},
        {"head dim 64, f16", wan(1, 8, 1000, 77, 64, KINEMA_SDPA_F16)},
        {"tiny fixture, bf16", wan(1, 2, 24, 24, 64, KINEMA_SDPA_BF16)},
    };
    for (auto& c : cases) {
        auto e = make_graph(&c.p)->validate();
        std::printf("validate %-32s %s %s\n", c.name, e.is_bad() ? "FAIL" : "ok",
                    e.is_bad() ? e.get_message().c_str() : "");
        failures += e.is_bad();
    }
    // And validation does reject what cuDNN cannot run (a head dim not a multiple of 8).
    auto odd = wan(1, 1, 128, 128, 20, KINEMA_SDPA_BF16);
    bool rejected = make_graph(&odd)->validate().is_bad();
    std::printf("validate %-32s %s\n", "head dim 20 (must fail)", rejected ? "rejected: ok" : "FAIL");
    failures += !rejected;
    char err[512];
    uint64_t ws = 0;
    // No driver here: a status and a message, never an abort.
    auto p = wan(1, 2, 24, 24, 64, KINEMA_SDPA_BF16);
    int rc = kinema_sdpa_prepare(&p, &ws, err, sizeof err);
    std::printf("prepare without a driver: status %d (%s)\n", rc, err);
    if (rc == KINEMA_SDPA_OK) {
        std::printf("  (a GPU is present: status OK is right too)\n");
    } else if (rc != KINEMA_SDPA_CUDA_ERROR && rc != KINEMA_SDPA_CUDNN_ERROR) {
        ++failures;
    }
    p.q_stride[3] = 2;
    rc = kinema_sdpa_prepare(&p, &ws, err, sizeof err);
    std::printf("prepare with a strided head dim: status %d (%s)\n", rc, err);
    failures += rc != KINEMA_SDPA_INTERNAL;
    rc = kinema_sdpa_run(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, nullptr, err,
                         sizeof err);
    std::printf("run with null parameters: status %d (%s)\n", rc, err);
    failures += rc != KINEMA_SDPA_INTERNAL;
    std::printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
