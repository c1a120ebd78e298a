# cmake -P script behind the install_package test: install, configure and build the outside
# project (main.cpp and the examples), run main.cpp. The examples run as their own tests.
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

run("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}")
set(cuda_arg)
if(CUDA_COMPILER)
  set(cuda_arg -DCMAKE_CUDA_COMPILER=${CUDA_COMPILER})
endif()
# The folder holding TorchConfig's siblings (Caffe2Config), so a pip-wheel LibTorch does not
# pair with Debian's Caffe2 config found on the default search path.
get_filename_component(torch_cmake_root "${TORCH_PREFIX}" DIRECTORY)
# The outside project compiles ten programs against LibTorch's headers with no precompiled header
# (2.5 minutes on 2 cores): through ccache, with the cache the build was configured with
# (scripts/build.sh sets CCACHE_DIR) and the checkout as base folder, a rerun and a new clone of
# the same commit hit the cache. The installed headers are new files each run, hence the
# sloppiness about their times.
set(launcher_arg)
if(CCACHE)
  set(launcher_arg "-DCMAKE_CXX_COMPILER_LAUNCHER=${CCACHE}")
  if(CCACHE_DIR)
    set(ENV{CCACHE_DIR} "${CCACHE_DIR}")
  endif()
  set(ENV{CCACHE_BASEDIR} "${SOURCE_DIR}")
  set(ENV{CCACHE_SLOPPINESS} "include_file_mtime,include_file_ctime")
endif()
run("${CMAKE_COMMAND}" -S "${PROJECT_DIR}" -B "${WORK_DIR}/build" -G Ninja
    "-DCMAKE_PREFIX_PATH=${prefix}" "-DTorch_DIR=${TORCH_PREFIX}"
    "-DCaffe2_DIR=${torch_cmake_root}/Caffe2" "-DCONCORD_EXAMPLES_DIR=${EXAMPLES_DIR}"
    ${cuda_arg} ${launcher_arg})
run("${CMAKE_COMMAND}" --build "${WORK_DIR}/build")
run("${WORK_DIR}/build/outside")
if(NOT last_output MATCHES "concord [0-9]+\\.[0-9]+\\.[0-9]+ ok")
  message(FATAL_ERROR "unexpected output from the outside project: ${last_output}")
endif()
message(STATUS "install test: ${last_output}")
