# Map the flag names of old llama.cpp / llama-cpp-python instructions to today's GGML_* options.
# Blog posts still say CMAKE_ARGS="-DLLAMA_CUBLAS=on"; those users get the backend they meant,
# and one line saying which flag it became. Runs before llama.cpp is added, so upstream's own
# deprecation checks (LLAMA_CUBLAS is a fatal error there) never see the old names.

function(pyllama_map_legacy_flag old new)
    if(NOT DEFINED ${old})
        return()
    endif()
    set(value "${${old}}")
    set(${new} "${value}" CACHE STRING "" FORCE)
    string(STRIP "pyllama: -D${old}=${value} is an old flag name; using -D${new}=${value}. ${ARGN}" line)
    message(NOTICE "${line}")
    unset(${old} CACHE)
    unset(${old} PARENT_SCOPE)
endfunction()

function(pyllama_map_legacy_flags)
    pyllama_map_legacy_flag(LLAMA_CUBLAS      GGML_CUDA)
    pyllama_map_legacy_flag(LLAMA_CUDA        GGML_CUDA)
    pyllama_map_legacy_flag(LLAMA_HIPBLAS     GGML_HIP)
    pyllama_map_legacy_flag(LLAMA_METAL       GGML_METAL)
    pyllama_map_legacy_flag(LLAMA_VULKAN      GGML_VULKAN)
    pyllama_map_legacy_flag(LLAMA_NATIVE      GGML_NATIVE)
    pyllama_map_legacy_flag(LLAMA_RPC         GGML_RPC)
    pyllama_map_legacy_flag(LLAMA_BLAS        GGML_BLAS)
    pyllama_map_legacy_flag(LLAMA_BLAS_VENDOR GGML_BLAS_VENDOR)
    pyllama_map_legacy_flag(LLAMA_CLBLAST     GGML_OPENCL
        "CLBlast was removed from llama.cpp in 2024 (PR #7735); this builds the OpenCL backend instead. For most GPUs -DGGML_VULKAN=on is the better choice.")
    if(DEFINED LLAMA_OPENBLAS)
        if(LLAMA_OPENBLAS)
            set(GGML_BLAS ON CACHE STRING "" FORCE)
            set(GGML_BLAS_VENDOR OpenBLAS CACHE STRING "" FORCE)
            message(NOTICE "pyllama: -DLLAMA_OPENBLAS=${LLAMA_OPENBLAS} is an old flag name; using -DGGML_BLAS=ON -DGGML_BLAS_VENDOR=OpenBLAS.")
        else()
            message(NOTICE "pyllama: -DLLAMA_OPENBLAS=${LLAMA_OPENBLAS} is an old flag name; leaving BLAS as configured.")
        endif()
        unset(LLAMA_OPENBLAS CACHE)
        unset(LLAMA_OPENBLAS PARENT_SCOPE)
    endif()
endfunction()

# A requested backend whose target did not come out of configuring ggml means a missing
# toolkit (upstream only warns for some, e.g. "Vulkan not found"). Fail instead of quietly
# building for the CPU.
function(pyllama_require_backends)
    set(backends
        "GGML_CUDA|ggml-cuda|the CUDA toolkit (nvcc and cuBLAS, found through CUDAToolkit_ROOT or nvcc on PATH)"
        "GGML_HIP|ggml-hip|ROCm (hipcc, hipBLAS)"
        "GGML_METAL|ggml-metal|macOS with the Metal framework"
        "GGML_VULKAN|ggml-vulkan|the Vulkan SDK (Debian: libvulkan-dev glslc)"
        "GGML_OPENCL|ggml-opencl|OpenCL headers and ICD loader (Debian: opencl-headers ocl-icd-opencl-dev)"
        "GGML_BLAS|ggml-blas|a BLAS library (Debian: libopenblas-dev)"
        "GGML_SYCL|ggml-sycl|the oneAPI SYCL compiler"
        "GGML_RPC|ggml-rpc|nothing extra (it is plain C++)")
    foreach(entry IN LISTS backends)
        string(REPLACE "|" ";" parts "${entry}")
        list(GET parts 0 flag)
        list(GET parts 1 target)
        list(GET parts 2 needs)
        if(${flag} AND NOT TARGET ${target})
            message(FATAL_ERROR "pyllama: -D${flag}=ON was requested but the ${target} backend could not be configured; it needs ${needs}. Refusing to build a CPU-only library instead.")
        endif()
    endforeach()
endfunction()

# ggml stops with FindBLAS's raw "BLAS not found" when the library is missing; say instead, in
# one line, which package brings the vendor that was asked for. Runs before llama.cpp is added.
function(pyllama_require_blas)
    if(NOT GGML_BLAS)
        return()
    endif()
    set(vendor "${GGML_BLAS_VENDOR}")
    if(vendor STREQUAL "")
        set(vendor "Generic")
    endif()
    set(BLA_VENDOR ${vendor})
    find_package(BLAS QUIET)
    if(BLAS_FOUND)
        return()
    endif()
    if(vendor MATCHES "OpenBLAS")
        set(install "Debian/Ubuntu: apt-get install libopenblas-dev; Fedora: dnf install openblas-devel; macOS: brew install openblas")
    elseif(vendor MATCHES "Intel")
        set(install "Intel oneMKL, with its setvars.sh sourced")
    elseif(vendor MATCHES "FLAME")
        set(install "Debian/Ubuntu: apt-get install libblis-dev")
    elseif(vendor MATCHES "Apple")
        set(install "macOS's Accelerate framework")
    else()
        set(install "a BLAS library, e.g. Debian/Ubuntu: apt-get install libopenblas-dev, then -DGGML_BLAS_VENDOR=OpenBLAS")
    endif()
    # indented: CMake prints pre-formatted text as it is instead of wrapping it at 80 columns
    message(FATAL_ERROR " pyllama: -DGGML_BLAS=ON needs the ${vendor} BLAS library, which was not found; install it (${install}) or leave -DGGML_BLAS out for a CPU build without BLAS.")
endfunction()
