# Every third-party dependency, each for one job (docs/architecture.md, "Dependencies").
# A CUDA LibTorch adds nvcc -gencode flags for TORCH_CUDA_ARCH_LIST, and its default list still
# names compute_50, which nvcc 13 no longer supports. Ampere and Hopper (H100/H200), plus PTX.
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0+PTX" CACHE STRING "CUDA architectures for the kernels")
endif()
# TorchConfig finds libtorch.so and libc10.so with find_library(... PATHS <LibTorch>/lib), which
# searches the system's folders first: beside Debian's libtorch-dev, a build against a pip
# LibTorch would link Debian's 1.13 libraries and load the wheel's only through the same
# sonames at run time. The LibTorch's own prefix, searched first, keeps both on one LibTorch.
if(NOT DEFINED Torch_DIR)
  find_file(_concord_torch_config Torch/TorchConfig.cmake PATHS ${CMAKE_PREFIX_PATH}
            NO_DEFAULT_PATH NO_CACHE)
  if(_concord_torch_config)
    get_filename_component(_concord_torch_prefix "${_concord_torch_config}/../../../.." ABSOLUTE)
    list(PREPEND CMAKE_PREFIX_PATH "${_concord_torch_prefix}")
  endif()
endif()
find_package(Torch REQUIRED)
find_package(Threads REQUIRED)
if(NOT CONCORD_OPS_ONLY)  # the ops layer needs LibTorch alone
  find_package(nlohmann_json 3.10 REQUIRED)
  find_package(fmt REQUIRED)
  find_package(spdlog REQUIRED)
  find_package(Eigen3 3.3 REQUIRED NO_MODULE)
  find_package(CLI11 CONFIG QUIET)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
  pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
  pkg_check_modules(PLPLOT REQUIRED IMPORTED_TARGET plplot-c++)
  # Images (concord/io/image.h, contact_sheet.h): PNG, JPEG (libjpeg-turbo), drawing and text.
  pkg_check_modules(LIBPNG REQUIRED IMPORTED_TARGET libpng)
  pkg_check_modules(LIBJPEG REQUIRED IMPORTED_TARGET libjpeg)
  pkg_check_modules(CAIRO REQUIRED IMPORTED_TARGET cairo)
  pkg_check_modules(ICU REQUIRED IMPORTED_TARGET icu-uc)  # Unicode normalisation (NFC) and case

  if(NOT TARGET CLI11::CLI11)
    # Debian's libcli11-dev ships the header without a CMake package on some releases.
    find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
    add_library(CLI11::CLI11 INTERFACE IMPORTED)
    target_include_directories(CLI11::CLI11 INTERFACE "${CLI11_INCLUDE_DIR}")
  endif()

  # The LibTorch inside PyPI's wheel ships its own, newer {fmt} headers in its include folder,
  # which would shadow Debian's fmt 9 that Debian's spdlog was built against. A folder of links
  # to the Debian headers, searched first, keeps every target on one fmt (the two versions live
  # in different inline namespaces, fmt::v9 and fmt::v12, so the libraries never clash).
  foreach(_dir IN LISTS TORCH_INCLUDE_DIRS)
    if(EXISTS "${_dir}/fmt/format.h" AND NOT _dir MATCHES "^/usr/include")
      set(_compat "${PROJECT_BINARY_DIR}/compat-include")
      file(MAKE_DIRECTORY "${_compat}")
      foreach(_lib fmt spdlog)
        file(CREATE_LINK "/usr/include/${_lib}" "${_compat}/${_lib}" SYMBOLIC)
      endforeach()
      include_directories(BEFORE SYSTEM "${_compat}")
      message(STATUS "concord: LibTorch bundles fmt; Debian's fmt/spdlog headers take precedence")
      break()
    endif()
  endforeach()
endif()

# The wheel's libtorch_cuda.so finds NCCL, cuDNN and the CUDA libraries in sibling pip packages
# (site-packages/nvidia/*/lib) through its RUNPATH at run time; the linker needs to be told too,
# or it picks up an older NCCL from the CUDA toolkit and reports missing symbols.
set(CONCORD_TORCH_LINK_OPTIONS)
foreach(_dir IN LISTS TORCH_INCLUDE_DIRS)
  if(_dir MATCHES "site-packages/torch/include$")
    file(GLOB _nvidia_libs "${_dir}/../../nvidia/*/lib")
    foreach(_lib IN LISTS _nvidia_libs)
      get_filename_component(_lib "${_lib}" REALPATH)
      list(APPEND CONCORD_TORCH_LINK_OPTIONS "-Wl,-rpath-link,${_lib}")
    endforeach()
    break()
  endif()
endforeach()

# PyPI's torch 2.11 exports from libtorch.so the std::filesystem functions of the static
# libstdc++fs it was built with (64 symbols; 2.15 exports none). libtorch.so comes before
# libstdc++.so.6 in a program's load order, so a Concord program's fs::remove_all bound to
# LibTorch's copy and crashed on a null call inside it (a checkpoint's clean-up of stale
# temporaries, a test's TempDir). libstdc++ named first on the link line loads first: its
# definitions win, whatever a wheel exports.
if(NOT Torch_DIR MATCHES "^/usr/")
  list(APPEND CONCORD_TORCH_LINK_OPTIONS "-Wl,--push-state,--no-as-needed,-lstdc++,--pop-state")
endif()

# Debian's LibTorch calls BLAS through libopenblas.so.0, which Debian resolves to the pthread
# build of OpenBLAS. Its thread pool and LibTorch's OpenMP pool then spin against each other on
# a small machine (issue 18: docs/benchmarks.md, "OpenBLAS: the OpenMP build"). Debian's OpenMP
# build of OpenBLAS runs on the same libgomp pool as LibTorch. Everything that links Concord
# finds it first through an RPATH (DT_RPATH, not RUNPATH: only DT_RPATH also applies to the
# libraries LibTorch loads), without changing the system's BLAS alternative.
if(Torch_DIR MATCHES "^/usr/")
  find_path(CONCORD_OPENBLAS_OPENMP_DIR libopenblas.so.0
            PATHS "/usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp" NO_DEFAULT_PATH)
  if(CONCORD_OPENBLAS_OPENMP_DIR)
    list(APPEND CONCORD_TORCH_LINK_OPTIONS "-Wl,--disable-new-dtags"
         "-Wl,-rpath,${CONCORD_OPENBLAS_OPENMP_DIR}")
    message(STATUS "concord: OpenBLAS's OpenMP build from ${CONCORD_OPENBLAS_OPENMP_DIR}")
  else()
    message(STATUS "concord: no libopenblas0-openmp: LibTorch uses the system's BLAS (slower, "
                   "erratic on small models; scripts/install-deps.sh installs it)")
  endif()
endif()

# TorchConfig puts its ABI flag in TORCH_CXX_FLAGS; every target must agree with it.
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")
message(STATUS "concord: LibTorch ${Torch_VERSION} from ${Torch_DIR}")

# Data parallel (concord/train/process_group.h) runs on c10d's Gloo backend, which LibTorch
# compiles in; its C++ header includes Gloo's, which Debian ships in libgloo-dev. Without them
# the library builds and a WORLD_SIZE > 1 run says what is missing.
set(CONCORD_HAS_GLOO 0)
if(NOT CONCORD_OPS_ONLY)
  find_path(CONCORD_GLOO_INCLUDE_DIR gloo/algorithm.h)
  find_path(CONCORD_C10D_GLOO_HEADER torch/csrc/distributed/c10d/ProcessGroupGloo.hpp
            PATHS ${TORCH_INCLUDE_DIRS} NO_DEFAULT_PATH)
  if(CONCORD_GLOO_INCLUDE_DIR AND CONCORD_C10D_GLOO_HEADER)
    set(CONCORD_HAS_GLOO 1)
  else()
    message(STATUS "concord: no c10d Gloo headers (libgloo-dev): data parallel is off")
  endif()
endif()

# CUDA tensors go through c10d's NCCL backend, which a CUDA LibTorch compiles in (the pip
# wheel; Debian's LibTorch has no CUDA). Its header includes nccl.h, which the wheel's sibling
# package nvidia-nccl ships (site-packages/nvidia/nccl/include: the headers of the libnccl that
# libtorch_cuda.so loads), searched before any system copy. The host-side collectives stay on
# Gloo, so NCCL is used only beside it.
set(CONCORD_HAS_NCCL 0)
if(CONCORD_HAS_GLOO AND (TARGET torch_cuda OR TORCH_CUDA_LIBRARIES OR CAFFE2_USE_CUDA))
  set(_nccl_hints)
  foreach(_dir IN LISTS TORCH_INCLUDE_DIRS)
    if(_dir MATCHES "site-packages/torch/include$")
      list(APPEND _nccl_hints "${_dir}/../../nvidia/nccl/include")
    endif()
  endforeach()
  find_path(CONCORD_NCCL_INCLUDE_DIR nccl.h HINTS ${_nccl_hints} "$ENV{NCCL_ROOT}/include")
  find_path(CONCORD_C10D_NCCL_HEADER torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp
            PATHS ${TORCH_INCLUDE_DIRS} NO_DEFAULT_PATH)
  if(CONCORD_NCCL_INCLUDE_DIR AND CONCORD_C10D_NCCL_HEADER)
    set(CONCORD_HAS_NCCL 1)
    message(STATUS "concord: c10d NCCL for CUDA tensors (nccl.h in ${CONCORD_NCCL_INCLUDE_DIR})")
  else()
    message(STATUS "concord: LibTorch has CUDA but no c10d NCCL headers or nccl.h: CUDA tensors "
                   "go through Gloo")
  endif()
endif()
