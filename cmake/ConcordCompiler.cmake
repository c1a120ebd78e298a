# Compiler set-up shared by every target.
find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM)
  # A precompiled header defeats ccache's default checks; these sloppiness settings are what the
  # ccache manual asks for so that PCH builds still hit the cache.
  set(_concord_ccache "${CMAKE_COMMAND}" -E env
      "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
      "${CCACHE_PROGRAM}")
  set(CMAKE_CXX_COMPILER_LAUNCHER ${_concord_ccache})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${_concord_ccache})
endif()

# Paths relative to the checkout, so that every clone of the repository shares ccache's entries:
# - __FILE__ (in LibTorch's TORCH_CHECK, gtest's assertions): a unity batch includes its sources
#   by absolute path, and an absolute __FILE__ in the preprocessed code made every clone miss;
# - debug information (the asan flavour's -g1): ccache hashes the working folder of a compile that
#   writes it, unless a prefix map covers that folder, and then it hashes the mapped one.
# -ffile-prefix-map is both maps in one (ccache leaves the map's own path out of its hash).
add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-ffile-prefix-map=${PROJECT_SOURCE_DIR}/=>)

# -fPIC for executables and static libraries alike: gcc refuses a PCH built with other
# code-generation flags, and one shared PCH is worth more than PIE's small speed edge.
add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fPIC>)

# OpenMP for C++: LibTorch's at::parallel_for is a header template whose `omp parallel` region
# exists only where the including file is compiled with OpenMP (ATen/ParallelOpenMP.h tests
# _OPENMP). Without it, every at::parallel_for in Concord's own kernels ran the whole range on
# the calling thread, whatever at::set_num_threads said. The PCH is built with the same flag, so
# every target gets it. Linking: see concord_link_openmp below.
add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fopenmp>)

# The OpenMP runtime for a target: plain `gomp` (soname libgomp.so.1), the runtime LibTorch
# itself uses. Debian's LibTorch links the system's libgomp.so.1; a pip torch ships its own
# libgomp.so.1 in torch/lib, which the binaries' RUNPATH (torch/lib comes first) finds before the
# system's, so one process never holds two OpenMP runtimes with two thread pools.
function(concord_link_openmp target)
  target_link_libraries(${target} PUBLIC gomp)
endfunction()

set(CONCORD_WARNINGS -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare
    -Wno-missing-field-initializers)

# libFuzzer builds (scripts/fuzz.sh): the whole library is instrumented for coverage and
# AddressSanitizer; only the fuzz targets link libFuzzer's main().
if(CONCORD_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "CONCORD_BUILD_FUZZERS needs clang (CXX=clang++)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=address,undefined)
endif()

# Sanitized builds of the ordinary suite (scripts/build.sh asan: CONCORD_SANITIZE=address,undefined).
# Every report is fatal (-fno-sanitize-recover), so a UBSan finding fails its test like ASan's.
if(CONCORD_SANITIZE)
  add_compile_options(-fsanitize=${CONCORD_SANITIZE} -fno-sanitize-recover=all
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${CONCORD_SANITIZE})
endif()
