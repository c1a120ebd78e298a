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

# -fPIC for executables and static libraries alike: gcc refuses a PCH built with other
# code-generation flags, and one shared PCH is worth more than PIE's small speed edge.
add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fPIC>)

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
