// cuDNN fused scaled dot-product attention (flash attention) through the cuDNN C++
// frontend's graph API, behind the C API of kinema_sdpa.h.
//
// Building a cuDNN graph (validation, heuristics, plan compilation) costs milliseconds,
// so plans are cached per (device, shape, strides, dtype, scale): a denoising loop
// builds each of its few attention shapes once and then only executes.
#include "kinema_sdpa.h"

#include <cuda_runtime.h>
#include <cudnn.h>
#include <cudnn_frontend.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace fe = cudnn_frontend;

namespace {

constexpr int64_t Q_UID = 1, K_UID = 2, V_UID = 3, O_UID = 4;
// Enough for the few shapes of one model; past it the cache starts over rather than grow
// without bound (shapes change with resolution, and each plan holds device memory).
constexpr size_t MAX_PLANS = 64;

struct Plan {
    std::shared_ptr<fe::graph::Graph> graph;  // null: cuDNN has no engine for this key
    int64_t workspace = 0;
    std::string unsupported;
};

struct State {
    std::mutex lock;  // guards everything below and serialises handle use
    std::unordered_map<int, cudnnHandle_t> handles;
    std::map<std::vector<int64_t>, Plan> plans;
};

State& state() {
    // Never destroyed: handles outlive static destruction order at process exit.
    static State* s = new State();
    return *s;
}

int fail(char* err, size_t len, int code, const std::string& msg) {
    if (err && len) {
        std::snprintf(err, len, "%s", msg.c_str());
    }
    return code;
}

bool valid(const kinema_sdpa_params* p, std::string& why) {
    if (!p) {
        why = "null parameters";
        return false;
    }
    if (p->b <= 0 || p->h <= 0 || p->lq <= 0 || p->lk <= 0 || p->d <= 0) {
        why = "empty or negative dimension";
        return false;
    }
    if (p->dtype != KINEMA_SDPA_F16 && p->dtype != KINEMA_SDPA_BF16) {
        why = "dtype must be f16 or bf16";
        return false;
    }
    if (p->q_stride[3] != 1 || p->k_stride[3] != 1 || p->v_stride[3] != 1) {
        why = "the head dimension must be contiguous (stride 1)";
        return false;
    }
    return true;
}

std::vector<int64_t> key_of(int device, const kinema_sdpa_params* p) {
    uint32_t scale_bits = 0;
    std::memcpy(&scale_bits, &p->scale, sizeof scale_bits);
    std::vector<int64_t> key = {device, p->b, p->h, p->lq, p->lk, p->d, p->dtype, scale_bits};
    for (int i = 0; i < 4; ++i) {
        key.push_back(p->q_stride[i]);
        key.push_back(p->k_stride[i]);
        key.push_back(p->v_stride[i]);
    }
    return key;
}

std::vector<int64_t> strides(const int64_t s[4]) { return {s[0], s[1], s[2], s[3]}; }

// The attention graph for `p`, not yet validated or built (no GPU needed up to
// validate(); csrc/validate_test.cpp checks the models' shapes that way).
std::shared_ptr<fe::graph::Graph> make_graph(const kinema_sdpa_params* p) {
    auto io = p->dtype == KINEMA_SDPA_BF16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF;
    auto graph = std::make_shared<fe::graph::Graph>();
    graph->set_io_data_type(io)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto tensor = [&](const char* name, int64_t uid, int64_t l, const int64_t s[4]) {
        return graph->tensor(fe::graph::Tensor_attributes()
                                 .set_name(name)
                                 .set_uid(uid)
                                 .set_dim({p->b, p->h, l, p->d})
                                 .set_stride(strides(s)));
    };
    auto q = tensor("Q", Q_UID, p->lq, p->q_stride);
    auto k = tensor("K", K_UID, p->lk, p->k_stride);
    auto v = tensor("V", V_UID, p->lk, p->v_stride);
    auto options = fe::graph::SDPA_attributes()
                       .set_name("kinema_sdpa")
                       .set_generate_stats(false)  // inference: no softmax stats for backward
                       .set_causal_mask(false)
                       .set_attn_scale(p->scale);
    auto outputs = graph->sdpa(q, k, v, options);
    outputs[0]
        ->set_output(true)
        .set_uid(O_UID)
        .set_dim({p->b, p->h, p->lq, p->d})
        .set_stride({p->h * p->lq * p->d, p->lq * p->d, p->d, 1});
    return graph;
}

// Builds the graph for `p`. Returns OK with plan.graph set, UNSUPPORTED with
// plan.unsupported set (cached: cuDNN will not change its mind), or an error.
int build(cudnnHandle_t handle, const kinema_sdpa_params* p, Plan& plan, std::string& msg) {
    auto graph = make_graph(p);
    if (auto e = graph->validate(); e.is_bad()) {
        plan.unsupported = "validate: " + e.get_message();
        return KINEMA_SDPA_UNSUPPORTED;
    }
    if (auto e = graph->build_operation_graph(handle); e.is_bad()) {
        plan.unsupported = "build_operation_graph: " + e.get_message();
        return KINEMA_SDPA_UNSUPPORTED;
    }
    if (auto e = graph->create_execution_plans({fe::HeurMode_t::A}); e.is_bad()) {
        plan.unsupported = "create_execution_plans: " + e.get_message();
        return KINEMA_SDPA_UNSUPPORTED;
    }
    if (auto e = graph->check_support(handle); e.is_bad()) {
        plan.unsupported = "check_support: " + e.get_message();
        return KINEMA_SDPA_UNSUPPORTED;
    }
    if (auto e = graph->build_plans(handle); e.is_bad()) {
        msg = "build_plans: " + e.get_message();
        return KINEMA_SDPA_CUDNN_ERROR;
    }
    int64_t ws = 0;
    if (auto e = graph->get_workspace_size(ws); e.is_bad()) {
        msg = "get_workspace_size: " + e.get_message();
        return KINEMA_SDPA_CUDNN_ERROR;
    }
    plan.graph = graph;
    plan.workspace = ws;
    return KINEMA_SDPA_OK;
}

// With the state locked: the handle of the current device and the plan for `p`.
int lookup(State& s, const kinema_sdpa_params* p, cudnnHandle_t& handle, Plan*& plan,
           std::string& msg) {
    int device = 0;
    if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) {
        msg = std::string("cudaGetDevice: ") + cudaGetErrorString(e);
        return KINEMA_SDPA_CUDA_ERROR;
    }
    auto h = s.handles.find(device);
    if (h == s.handles.end()) {
        cudnnHandle_t created = nullptr;
        if (cudnnStatus_t st = cudnnCreate(&created); st != CUDNN_STATUS_SUCCESS) {
            msg = std::string("cudnnCreate: ") + cudnnGetErrorString(st);
            return KINEMA_SDPA_CUDNN_ERROR;
        }
        h = s.handles.emplace(device, created).first;
    }
    handle = h->second;
    auto key = key_of(device, p);
    auto found = s.plans.find(key);
    if (found == s.plans.end()) {
        Plan built;
        int rc = build(handle, p, built, msg);
        if (rc != KINEMA_SDPA_OK && rc != KINEMA_SDPA_UNSUPPORTED) {
            return rc;  // not cached: a transient failure (e.g. out of memory) may pass later
        }
        if (s.plans.size() >= MAX_PLANS) {
            s.plans.clear();
        }
        found = s.plans.emplace(std::move(key), std::move(built)).first;
    }
    plan = &found->second;
    if (!plan->graph) {
        msg = plan->unsupported;
        return KINEMA_SDPA_UNSUPPORTED;
    }
    return KINEMA_SDPA_OK;
}

}  // namespace

extern "C" int kinema_sdpa_prepare(const kinema_sdpa_params* p, uint64_t* workspace_bytes,
                                   char* err, size_t err_len) {
    try {
        std::string msg;
        if (!valid(p, msg) || !workspace_bytes) {
            return fail(err, err_len, KINEMA_SDPA_INTERNAL, msg.empty() ? "null output" : msg);
        }
        State& s = state();
        std::lock_guard<std::mutex> guard(s.lock);
        cudnnHandle_t handle = nullptr;
        Plan* plan = nullptr;
        if (int rc = lookup(s, p, handle, plan, msg); rc != KINEMA_SDPA_OK) {
            return fail(err, err_len, rc, msg);
        }
        *workspace_bytes = static_cast<uint64_t>(plan->workspace);
        return KINEMA_SDPA_OK;
    } catch (const std::exception& e) {
        return fail(err, err_len, KINEMA_SDPA_INTERNAL, std::string("exception: ") + e.what());
    } catch (...) {
        return fail(err, err_len, KINEMA_SDPA_INTERNAL, "unknown exception");
    }
}

extern "C" int kinema_sdpa_run(const kinema_sdpa_params* p, const void* q, const void* k,
                               const void* v, void* o, void* workspace, uint64_t workspace_bytes,
                               void* stream, char* err, size_t err_len) {
    try {
        std::string msg;
        if (!valid(p, msg)) {
            return fail(err, err_len, KINEMA_SDPA_INTERNAL, msg);
        }
        if (!q || !k || !v || !o) {
            return fail(err, err_len, KINEMA_SDPA_INTERNAL, "null tensor pointer");
        }
        State& s = state();
        std::lock_guard<std::mutex> guard(s.lock);
        cudnnHandle_t handle = nullptr;
        Plan* plan = nullptr;
        if (int rc = lookup(s, p, handle, plan, msg); rc != KINEMA_SDPA_OK) {
            return fail(err, err_len, rc, msg);
        }
        if (static_cast<uint64_t>(plan->workspace) > workspace_bytes ||
            (plan->workspace > 0 && !workspace)) {
            return fail(err, err_len, KINEMA_SDPA_INTERNAL,
                        "workspace of " + std::to_string(workspace_bytes) + " bytes, the plan needs " +
                            std::to_string(plan->workspace));
        }
        if (cudnnStatus_t st = cudnnSetStream(handle, static_cast<cudaStream_t>(stream));
            st != CUDNN_STATUS_SUCCESS) {
            return fail(err, err_len, KINEMA_SDPA_CUDNN_ERROR,
                        std::string("cudnnSetStream: ") + cudnnGetErrorString(st));
        }
        // The frontend takes non-const pointers; q, k and v are only read.
        std::unordered_map<int64_t, void*> pack = {
            {Q_UID, const_cast<void*>(q)},
            {K_UID, const_cast<void*>(k)},
            {V_UID, const_cast<void*>(v)},
            {O_UID, o},
        };
        if (auto e = plan->graph->execute(handle, pack, workspace); e.is_bad()) {
            return fail(err, err_len, KINEMA_SDPA_CUDNN_ERROR, "execute: " + e.get_message());
        }
        return KINEMA_SDPA_OK;
    } catch (const std::exception& e) {
        return fail(err, err_len, KINEMA_SDPA_INTERNAL, std::string("exception: ") + e.what());
    } catch (...) {
        return fail(err, err_len, KINEMA_SDPA_INTERNAL, "unknown exception");
    }
}
