# Find every shared library target the llama.cpp build defines (not a fixed list: backends
# come and go with CMAKE_ARGS) and install them all inside the Python package.

function(pyllama_shared_targets dir out)
    get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
    get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
    set(found "")
    foreach(target IN LISTS targets)
        get_target_property(type ${target} TYPE)
        if(type STREQUAL "SHARED_LIBRARY" OR type STREQUAL "MODULE_LIBRARY")
            list(APPEND found ${target})
        endif()
    endforeach()
    foreach(subdir IN LISTS subdirs)
        pyllama_shared_targets(${subdir} sub_found)
        list(APPEND found ${sub_found})
    endforeach()
    set(${out} ${found} PARENT_SCOPE)
endfunction()

# Wheels cannot hold symlinks, so versioned sonames (libllama.so.0 -> libllama.so.0.0.1)
# would be copied three times; drop the versions and resolve everything through $ORIGIN.
function(pyllama_install_in_package destination)
    if(APPLE)
        set(origin "@loader_path")
    else()
        set(origin "$ORIGIN")
    endif()
    foreach(target IN LISTS ARGN)
        get_target_property(type ${target} TYPE)
        if(type STREQUAL "SHARED_LIBRARY")
            set_property(TARGET ${target} PROPERTY VERSION)
            set_property(TARGET ${target} PROPERTY SOVERSION)
        endif()
        # CMAKE_INSTALL_RPATH adds places outside the package (the CUDA wheel: NVIDIA's pip wheels)
        set(rpath ${origin} ${CMAKE_INSTALL_RPATH})
        set_target_properties(${target} PROPERTIES INSTALL_RPATH "${rpath}")
        install(TARGETS ${target}
                LIBRARY DESTINATION ${destination} COMPONENT pyllama
                RUNTIME DESTINATION ${destination} COMPONENT pyllama
                # headers are not shipped: their component is never installed into the wheel
                PUBLIC_HEADER DESTINATION include COMPONENT pyllama-headers)
    endforeach()
endfunction()
