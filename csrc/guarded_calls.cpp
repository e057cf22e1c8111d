// llama.cpp checks some invariants of a model file with GGML_ASSERT, which aborts the
// process, and its grammar sampler throws C++ exceptions while sampling ("Unexpected empty
// grammar stack"), which would end the process at the C boundary. pyllama promises an
// exception instead. These wrappers install a ggml abort callback that, while a guarded
// call runs on this thread, throws a C++ exception; the exception (or one llama.cpp threw
// itself) unwinds to the wrapper (llama.cpp's own loader catches it on the way and cleans
// up), and Python gets a failure value (NULL, LLAMA_TOKEN_NULL, false) with the message.
// Outside a guarded call the callback prints the message and ggml aborts as it always did.

#include <cstdio>
#include <stdexcept>
#include <string>

#include "guard.h"

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

}  // namespace

namespace pyllama_guard {

void enter() {
    ggml_set_abort_callback(on_ggml_abort);
    last_failure.clear();
    in_guarded_call = true;
}

void leave() { in_guarded_call = false; }

void fail(const std::string & message) { last_failure = message; }

}  // namespace pyllama_guard

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

// Sampling: the grammar stage throws when a token leaves it no way to go on, and the chain
// asserts on states it does not expect. The sampler is unusable afterwards; the caller ends
// that request.
llama_token pyllama_sampler_sample(struct llama_sampler * sampler, struct llama_context * ctx, int32_t idx) {
    return guarded(LLAMA_TOKEN_NULL, [&] { return llama_sampler_sample(sampler, ctx, idx); });
}

bool pyllama_sampler_accept(struct llama_sampler * sampler, llama_token token) {
    return guarded(false, [&] { llama_sampler_accept(sampler, token); return true; });
}

bool pyllama_sampler_apply(struct llama_sampler * sampler, llama_token_data_array * candidates) {
    return guarded(false, [&] { llama_sampler_apply(sampler, candidates); return true; });
}

bool pyllama_sampler_reset(struct llama_sampler * sampler) {
    return guarded(false, [&] { llama_sampler_reset(sampler); return true; });
}

// A grammar that does not parse is a nullptr upstream already; invalid trigger regexes throw.
struct llama_sampler * pyllama_sampler_init_grammar(const struct llama_vocab * vocab, const char * grammar,
                                                    const char * root) {
    return guarded([&] { return llama_sampler_init_grammar(vocab, grammar, root); });
}

struct llama_sampler * pyllama_sampler_init_grammar_lazy_patterns(
        const struct llama_vocab * vocab, const char * grammar, const char * root, const char ** trigger_patterns,
        size_t n_trigger_patterns, const llama_token * trigger_tokens, size_t n_trigger_tokens) {
    return guarded([&] {
        return llama_sampler_init_grammar_lazy_patterns(vocab, grammar, root, trigger_patterns, n_trigger_patterns,
                                                        trigger_tokens, n_trigger_tokens);
    });
}

const char * pyllama_last_failure(void) {
    return last_failure.c_str();
}

}
