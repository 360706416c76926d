# kernels/cuda/emu.cmake: the CUDA backend compiled as plain C++ against the CPU emulation of
# kernels/cuda/emu.h (library sdxs_cuda_emu), so that its kernels, launchers and graph replay run
# in CI, where there is no GPU. Needs only a C++17 compiler: no CUDA toolkit. Each .cu is compiled
# through a generated one-line .cpp that includes it.
enable_language(CXX)

set(SDXS_CXX_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wformat=2 -Wvla -Wmissing-declarations
    -Wno-unused-parameter)
if(SDXS_WERROR)
  list(APPEND SDXS_CXX_WARNINGS -Werror)
endif()

file(GLOB SDXS_CUDA_EMU_CU CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/cuda/*.cu)
set(SDXS_CUDA_EMU_SOURCES ${CMAKE_SOURCE_DIR}/kernels/cuda/emu.cpp)
foreach(src ${SDXS_CUDA_EMU_CU})
  get_filename_component(name ${src} NAME_WE)
  file(RELATIVE_PATH rel ${CMAKE_SOURCE_DIR} ${src})
  set(wrapper ${CMAKE_BINARY_DIR}/cuda-emu/${name}.cpp)
  file(CONFIGURE OUTPUT ${wrapper} CONTENT "#include \"${rel}\"\n" @ONLY)
  list(APPEND SDXS_CUDA_EMU_SOURCES ${wrapper})
endforeach()

add_library(sdxs_cuda_emu STATIC ${SDXS_CUDA_EMU_SOURCES})
set_target_properties(sdxs_cuda_emu PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON
  CXX_EXTENSIONS OFF)
target_compile_definitions(sdxs_cuda_emu PRIVATE SDXS_CUDA_EMU=1)
target_include_directories(sdxs_cuda_emu PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/include)
# Kernels reinterpret element arrays as 16-byte vectors, as CUDA code does; fp-contract=off keeps
# the emulated arithmetic rounding like the CPU reference's.
target_compile_options(sdxs_cuda_emu PRIVATE ${SDXS_CXX_WARNINGS} -fno-strict-aliasing
  -ffp-contract=off $<$<CONFIG:Release>:-O2>)
target_link_libraries(sdxs_cuda_emu PUBLIC sdxs_core Threads::Threads)

# The op-parity test runs the emulated backend (and the real one, where a GPU is present).
if(TARGET test_cuda_ops)
  target_link_libraries(test_cuda_ops PRIVATE sdxs_cuda_emu)
endif()
