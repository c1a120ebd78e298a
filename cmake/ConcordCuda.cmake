# Resolves CONCORD_CUDA (AUTO|ON|OFF) into CONCORD_WITH_CUDA.
#   AUTO: the CUDA kernels build when nvcc is found and LibTorch has CUDA, so that the dispatch
#         from ops can call them. Against a CPU LibTorch (Debian's) nothing could call them:
#         building them there cost every Debian build (quickstart's included) ~80 s of nvcc and
#         linked cuBLASLt into every binary.
#   ON:   the kernels build whenever nvcc is found (they take raw pointers, never torch headers),
#         with or without a CUDA LibTorch; an error without nvcc.
set(CONCORD_CUDA_ARCHITECTURES "80-real;90-real;90-virtual" CACHE STRING
    "CUDA architectures of the kernels when LibTorch does not choose them")
set(CONCORD_WITH_CUDA OFF)
set(CONCORD_TORCH_HAS_CUDA OFF)
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES OR CAFFE2_USE_CUDA)
  set(CONCORD_TORCH_HAS_CUDA ON)
endif()

if(CONCORD_CUDA STREQUAL "ON" OR (CONCORD_CUDA STREQUAL "AUTO" AND CONCORD_TORCH_HAS_CUDA))
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(CONCORD_WITH_CUDA ON)
    # A CUDA LibTorch turns CMAKE_CUDA_ARCHITECTURES OFF and passes -gencode flags for
    # TORCH_CUDA_ARCH_LIST instead (cmake/ConcordDependencies.cmake sets it); otherwise Ampere and
    # Hopper (H100/H200) plus PTX for newer parts.
    if(NOT CMAKE_CUDA_ARCHITECTURES STREQUAL "OFF")
      set(CMAKE_CUDA_ARCHITECTURES ${CONCORD_CUDA_ARCHITECTURES})
    endif()
  elseif(CONCORD_CUDA STREQUAL "ON")
    message(FATAL_ERROR "CONCORD_CUDA=ON but no CUDA compiler was found")
  endif()
endif()
message(STATUS "concord: CUDA kernels ${CONCORD_WITH_CUDA}, LibTorch CUDA ${CONCORD_TORCH_HAS_CUDA}")
