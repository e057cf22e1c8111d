// llama.cpp checks some invariants of a model file with GGML_ASSERT, which aborts the
// process. pyllama promises an exception instead. These wrappers install a ggml abort
// callback that, while a guarded call runs on this thread, throws a C++ exception; the
// exception unwinds to the wrapper (llama.cpp's own loader catches it on the way and
// cleans up), and Python gets a NULL with the message. Outside a guarded call the
// callback prints the message and ggml aborts as it always did.

#include <cstdio>
#include <stdexcept>
#include <string>

#include "ggml-backend.h"
#include "ggml-rpc.h"
#include "ggml.h"
#include "llama.h"

namespace {

thread_local bool in_guarded_call = false;
thread_local std::string last_failure;

void on_ggml_abort(const char * message) {
    if (in_guarded_call) {
        throw std::runtime_error(message);
    }
    std::fprintf(stderr, "%s\n", message);
}

struct Guard {
    Guard() {
        ggml_set_abort_callback(on_ggml_abort);
        last_failure.clear();
        in_guarded_call = true;
    }
    ~Guard() { in_guarded_call = false; }
};

}  // namespace

// Runs a llama.cpp call that returns a pointer; an assertion inside it yields nullptr.
template <typename Call>
auto guarded(Call && call) -> decltype(call()) {
    Guard guard;
    try {
        return call();
    } catch (const std::exception & e) {
        last_failure = e.what();
        return nullptr;
    }
}

extern "C" {

struct llama_model * pyllama_model_load(const char * path, struct llama_model_params params) {
    return guarded([&] { return llama_model_load_from_file(path, params); });
}

struct llama_context * pyllama_context_init(struct llama_model * model, struct llama_context_params params) {
    return guarded([&] { return llama_init_from_model(model, params); });
}

// Registering an RPC server connects to it; an unreachable one is a GGML_ABORT upstream.
// The function comes from the RPC backend's registry: with GGML_BACKEND_DL (the prebuilt
// wheels) that backend is a module loaded at run time, not a library this one links.
ggml_backend_reg_t pyllama_rpc_add_server(const char * endpoint) {
    ggml_backend_reg_t rpc = ggml_backend_reg_by_name("RPC");
    auto add_server = rpc ? reinterpret_cast<decltype(&ggml_backend_rpc_add_server)>(
                                ggml_backend_reg_get_proc_address(rpc, "ggml_backend_rpc_add_server"))
                          : nullptr;
    if (!add_server) {
        last_failure = std::string("this build has no RPC backend, cannot reach ") + endpoint;
        return nullptr;
    }
    return guarded([&] { return add_server(endpoint); });
}

const char * pyllama_last_failure(void) {
    return last_failure.c_str();
}

}
