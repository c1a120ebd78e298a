# Target helpers: every Concord library and test is made through these, so they all share one
# precompiled header, one warning set and one install export.

# _concord_add_pch(<name> [compile options...]): cmake/concord_pch.h precompiled as target
# <name>. The header is named in angle brackets and found through cmake/ on the include path, so
# CMake's generated cmake_pch.hxx holds no absolute path: the .gch is then the same bytes in every
# clone of the repository, and ccache (which hashes the .gch into every object that uses it) hits
# across clones. With the header's absolute path, every PCH user missed in a clone elsewhere.
function(_concord_add_pch name)
  add_library(${name} OBJECT "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/pch.cpp")
  target_link_libraries(${name} PUBLIC torch nlohmann_json::nlohmann_json fmt::fmt spdlog::spdlog)
  target_compile_options(${name} PRIVATE ${CONCORD_WARNINGS} ${ARGN})
  target_include_directories(${name} PRIVATE "${CMAKE_CURRENT_FUNCTION_LIST_DIR}")
  target_precompile_headers(${name} PRIVATE "<concord_pch.h>")
endfunction()

if(CONCORD_USE_PCH)
  _concord_add_pch(concord_pch)
  # The same header for the code that is run and never timed (concord_compile_for_checking
  # below), at -O0: gcc refuses a PCH built at another side of -O0 / -O1+.
  _concord_add_pch(concord_check_pch -O0)
endif()

function(_concord_use_pch target)
  if(CONCORD_USE_PCH)
    target_precompile_headers(${target} REUSE_FROM concord_pch)
    # Where gcc finds the header should it ever read cmake_pch.hxx instead of the .gch.
    target_include_directories(${target} PRIVATE "${CMAKE_CURRENT_FUNCTION_LIST_DIR}")
  endif()
endfunction()

# _concord_use_unity(<target>): batches the target's sources when CONCORD_UNITY is on. One file
# of a batch sees the includes, file-local names and macros of the files before it, so file-local
# helpers need names of their own within a target (the unity build fails on a clash). A source
# with compile options of its own (train/process_group.cpp) stays out of the batches (CMake).
# Measured (tasks/task_reward, task_policy, task_maxmin at -O3): 110 s one file at a time,
# 48 s as one translation unit: most of a file's compile is LibTorch's inline code.
# A target of one source (a benchmark, an example) stays as it is.
function(_concord_use_unity target)
  get_target_property(_sources ${target} SOURCES)
  list(LENGTH _sources _count)
  if(CONCORD_UNITY AND _count GREATER 1)
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON
      UNITY_BUILD_BATCH_SIZE ${CONCORD_UNITY_BATCH})
    # In a batch every .cpp is an included file, so gcc takes a class of the file that holds a
    # type of the file's anonymous namespace (a pimpl's Impl) for a header's ODR hazard.
    target_compile_options(${target} PRIVATE -Wno-subobject-linkage)
  endif()
endfunction()

# concord_test_build_paths(<source>): tests/support/build_paths.cpp, the one file that holds the
# build's source and binary folders (test_support.cpp reads them through it). A path in the
# preprocessed code makes a compile miss ccache in every other clone, so it stays out of unity
# batches and off every other command line. The PCH is not needed there.
function(concord_test_build_paths source)
  set_source_files_properties("${source}" PROPERTIES
    SKIP_UNITY_BUILD_INCLUSION ON SKIP_PRECOMPILE_HEADERS ON
    COMPILE_DEFINITIONS "CONCORD_SOURCE_DIR=\"${PROJECT_SOURCE_DIR}\";CONCORD_BINARY_DIR=\"${PROJECT_BINARY_DIR}\"")
endfunction()

# concord_compile_for_checking(<target>): code that is run to check behaviour and never timed
# (tests, examples, corpus replays) compiles at -O0, with a PCH of its own at -O0. Its compile is
# template instantiation plus the optimiser's work on the result; -O0 drops the second
# (tests/train/test_train.cpp: 21.4 s at -O3, 16.9 s at -O1, 11.0 s at -O0 with the -O0 PCH;
# at -O0 against the -O3 PCH, which gcc refuses, 23.6 s). What these programs do at run time is
# the libraries' work, compiled at the build type's level with the kernels and benchmarks.
function(concord_compile_for_checking target)
  target_compile_options(${target} PRIVATE -O0)
  if(CONCORD_USE_PCH)
    get_target_property(_reuse ${target} PRECOMPILE_HEADERS_REUSE_FROM)
    if(_reuse)
      set_target_properties(${target} PROPERTIES PRECOMPILE_HEADERS_REUSE_FROM concord_check_pch)
    endif()
  endif()
endfunction()

# concord_add_library(<name> SOURCES ... [DEPS ...] [PRIVATE_DEPS ...])
# A static library of one layer, exported as concord::<name without the concord_ prefix>.
function(concord_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  string(REGEX REPLACE "^concord_" "" short "${name}")
  add_library(concord::${short} ALIAS ${name})
  set_target_properties(${name} PROPERTIES EXPORT_NAME ${short})
  target_include_directories(${name} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
    $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>
    $<INSTALL_INTERFACE:include>)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  target_compile_options(${name} PRIVATE ${CONCORD_WARNINGS})
  _concord_use_pch(${name})
  _concord_use_unity(${name})
  set_property(GLOBAL APPEND PROPERTY CONCORD_LIBRARIES ${name})
endfunction()

# concord_add_executable(<name> SOURCES ... DEPS ...)
function(concord_add_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  target_compile_options(${name} PRIVATE ${CONCORD_WARNINGS})
  _concord_use_pch(${name})
  _concord_use_unity(${name})
endfunction()
