# CONCORD_OPS_ONLY=ON: the ops layer alone, for a machine with a LibTorch (e.g. a pip torch with
# CUDA) and none of Concord's other dependencies (scripts/gpu-check.sh builds this way).
#   concord_ops     src/ops + kernels/cpu (+ kernels/cuda and the CUDA dispatch when available)
#   test_ops        tests/ops with GoogleTest (find_package(GTest): point GTest_DIR or
#                   CMAKE_PREFIX_PATH at any install, e.g. one built from googletest's sources);
#                   its own main (cmake/ops_only_test_main.cpp) instead of the foundation's
#   bench_ops_*     the kernel benchmarks
# Only error.h of core (header-only) and data/collate.cpp (the block-causal mask that one
# attention test compares with; it needs LibTorch alone) come from outside src/ops.

file(GLOB _ops_sources CONFIGURE_DEPENDS
  "${PROJECT_SOURCE_DIR}/src/ops/*.cpp" "${PROJECT_SOURCE_DIR}/kernels/cpu/*.cpp")
if(EXISTS "${PROJECT_SOURCE_DIR}/kernels/CMakeLists.txt")
  add_subdirectory("${PROJECT_SOURCE_DIR}/kernels" "${PROJECT_BINARY_DIR}/kernels")
endif()
concord_add_library(concord_ops SOURCES ${_ops_sources} DEPS torch Threads::Threads)
set_target_properties(concord_ops PROPERTIES UNITY_BUILD OFF)  # as in src/CMakeLists.txt
target_link_options(concord_ops INTERFACE ${CONCORD_TORCH_LINK_OPTIONS})
concord_link_openmp(concord_ops)
if(TARGET concord_kernels_cuda)
  target_link_libraries(concord_ops PRIVATE concord_kernels_cuda)
endif()
if(CONCORD_WITH_CUDA AND CONCORD_TORCH_HAS_CUDA)
  target_compile_definitions(concord_ops PRIVATE CONCORD_CUDA_DISPATCH=1)
endif()

if(CONCORD_BUILD_TESTS)
  enable_testing()
  find_package(GTest REQUIRED)
  file(GLOB _test_sources CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/tests/ops/*.cpp")
  add_executable(test_ops ${_test_sources}
    "${PROJECT_SOURCE_DIR}/tests/support/test_support.cpp"
    "${PROJECT_SOURCE_DIR}/tests/support/build_paths.cpp"
    "${PROJECT_SOURCE_DIR}/src/data/collate.cpp"
    "${CMAKE_CURRENT_LIST_DIR}/ops_only_test_main.cpp")
  set_target_properties(test_ops PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/tests")
  target_include_directories(test_ops PRIVATE "${PROJECT_SOURCE_DIR}/tests/support")
  concord_test_build_paths("${PROJECT_SOURCE_DIR}/tests/support/build_paths.cpp")
  target_link_libraries(test_ops PRIVATE concord_ops GTest::gtest)
  target_compile_options(test_ops PRIVATE ${CONCORD_WARNINGS})
  concord_compile_for_checking(test_ops)
  add_test(NAME test_ops COMMAND test_ops --gtest_filter=-*_CUDA*)
  add_test(NAME test_ops_cuda COMMAND test_ops --gtest_filter=*_CUDA*)
  set_tests_properties(test_ops PROPERTIES LABELS unit)
  set_tests_properties(test_ops_cuda PROPERTIES LABELS cuda)
endif()

if(CONCORD_BUILD_BENCHMARKS)
  file(GLOB _bench_sources CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/benchmarks/bench_ops_*.cpp")
  foreach(src IN LISTS _bench_sources)
    get_filename_component(name "${src}" NAME_WE)
    concord_add_executable(${name} SOURCES "${src}" DEPS concord_ops)
    set_target_properties(${name} PROPERTIES
      RUNTIME_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/benchmarks")
    if(TARGET concord_kernels_cuda AND CONCORD_TORCH_HAS_CUDA)
      target_link_libraries(${name} PRIVATE concord_kernels_cuda)
      target_compile_definitions(${name} PRIVATE CONCORD_CUDA_DISPATCH=1)
    endif()
  endforeach()
endif()
