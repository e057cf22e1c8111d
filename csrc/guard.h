// The guard the wrappers in guarded_calls.cpp and guarded_media.cpp share: while a guarded
// call runs on a thread, a ggml assertion there throws instead of aborting the process, and
// the call's exception becomes a failure value plus a message (guarded_calls.cpp says why).
#pragma once

#include <exception>
#include <string>

namespace pyllama_guard {

void enter();                           // installs the throwing abort callback, forgets the last failure
void leave();
void fail(const std::string & message);  // why the current call failed, for pyllama_last_failure()

struct Scope {
    Scope() { enter(); }
    ~Scope() { leave(); }
};

}  // namespace pyllama_guard

// Runs a llama.cpp call; an assertion or exception inside it yields ``failed``.
template <typename Result, typename Call>
Result guarded(Result failed, Call && call) {
    pyllama_guard::Scope scope;
    try {
        return call();
    } catch (const std::exception & e) {
        pyllama_guard::fail(e.what());
        return failed;
    }
}

template <typename Call>
auto guarded(Call && call) -> decltype(call()) {
    return guarded<decltype(call())>(nullptr, call);
}
