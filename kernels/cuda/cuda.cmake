# kernels/cuda/cuda.cmake: adds the CUDA backend (kernels/cuda/*.cu) to sdxs_core. Included by
# CMakeLists.txt when a CUDA compiler is found (SDXS_CUDA=AUTO or ON).
# Options: SDXS_CUDA_ARCHS, the GPU generations to build for (CMake's CUDA_ARCHITECTURES form;
# default: machine code for Ampere (80) and Hopper (90) plus PTX that newer GPUs compile at load).
# Links cudart, cuBLASLt and, when found, cuDNN (SDXS_HAVE_CUDNN; without it convolutions use the
# backend's own implicit-GEMM kernels). Host warnings reach nvcc through -Xcompiler.
set(SDXS_CUDA_ARCHS "80-real;90-real;90-virtual" CACHE STRING
    "CUDA architectures of the CUDA backend (e.g. 90a-real for Hopper only)")
# CMake 3.25 cannot work out CUDA 13's default architecture, and sdxs_core exists before this
# file runs (so CMAKE_CUDA_ARCHITECTURES would come too late): the property is set on the target.
set(CMAKE_CUDA_ARCHITECTURES ${SDXS_CUDA_ARCHS})
set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
# Nothing needs a device link (no separable compilation), so programs that use sdxs_core keep
# linking with the C or C++ compiler, which also takes the sanitizer flags nvcc would refuse.
set(CMAKE_CUDA_LINKER_PREFERENCE_PROPAGATES OFF)

find_path(SDXS_CUDNN_INCLUDE cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV CUDNN_ROOT
  PATH_SUFFIXES include)
find_library(SDXS_CUDNN_LIB NAMES cudnn libcudnn.so.9 HINTS ${CUDAToolkit_LIBRARY_DIR}
  ENV CUDNN_ROOT PATH_SUFFIXES lib lib64)

file(GLOB SDXS_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/*.cu)
target_sources(sdxs_core PRIVATE ${SDXS_CUDA_SOURCES})
set_target_properties(sdxs_core PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
  CUDA_EXTENSIONS OFF CUDA_ARCHITECTURES "${SDXS_CUDA_ARCHS}" CUDA_RUNTIME_LIBRARY Shared)
target_compile_definitions(sdxs_core PRIVATE SDXS_HAVE_CUDA)
target_link_libraries(sdxs_core PUBLIC CUDA::cudart CUDA::cublasLt)

if(SDXS_CUDNN_INCLUDE AND SDXS_CUDNN_LIB)
  target_compile_definitions(sdxs_core PRIVATE SDXS_HAVE_CUDNN)
  target_include_directories(sdxs_core PRIVATE ${SDXS_CUDNN_INCLUDE})
  target_link_libraries(sdxs_core PUBLIC ${SDXS_CUDNN_LIB})
  message(STATUS "sdxs: cuDNN ${SDXS_CUDNN_LIB}")
else()
  message(STATUS "sdxs: cuDNN not found; convolutions use the implicit-GEMM kernels")
endif()

# The host compiler sees the project's C++ warnings (C-only ones left out); nvcc's own warnings
# become errors with SDXS_WERROR.
set(SDXS_NVCC_HOST_WARNINGS -Wall -Wextra -Wshadow -Wformat=2 -Wvla -Wmissing-declarations
    -Wno-unused-parameter)
list(JOIN SDXS_NVCC_HOST_WARNINGS "," SDXS_NVCC_HOST_JOINED)
set(SDXS_NVCC_FLAGS -Xcompiler=${SDXS_NVCC_HOST_JOINED} -Xcudafe=--display_error_number
    $<$<CONFIG:Release>:-O3>)
if(SDXS_WERROR)
  list(APPEND SDXS_NVCC_FLAGS -Werror=all-warnings -Xcompiler=-Werror)
endif()
target_compile_options(sdxs_core PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${SDXS_NVCC_FLAGS}>)
set(SDXS_HAVE_CUDA ON)
