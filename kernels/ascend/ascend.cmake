# Ascend C flash-attention kernel and its torch_npu operator library.
#
# Included by the top-level CMakeLists.txt only when PANGU_ENABLE_ASCEND is ON (the default when
# ASCEND_HOME_PATH is set). Needs the CANN toolkit (ascendc toolchain: compiler/tikcpp/ascendc_kernel_cmake;
# a missing toolkit is a configure error) and torch + torch_npu importable by the build's Python
# (otherwise the kernels are skipped with a warning, e.g. in pip's isolated builds). Produces:
#   pangu_ascend_kernels   static library compiled from flash_attention_kernel.cpp by ascendc_library,
#                          which also generates aclrtlaunch_<kernel>.h launch headers
#   pangu_ascend_ops       libpangu_ascend_ops.so (torch_npu_op.cpp + the host tiling), installed next
#                          to pangu_core/_core and loaded by pangu_core.attention.npu
# and defines PANGU_ASCEND_BUILT for _core so that pangu_core.build_info()["ascend"] is True.
#
# This file is written from the CANN documentation and samples; it has not been run here (no CANN
# toolkit in CI). The kernel tiling and a CPU simulation of the schedule are built into _core on every
# machine and tested there.

set(PANGU_ASCEND_HOME "$ENV{ASCEND_HOME_PATH}" CACHE PATH "CANN toolkit root (defaults to $ASCEND_HOME_PATH)")
if(NOT PANGU_ASCEND_HOME OR NOT IS_DIRECTORY "${PANGU_ASCEND_HOME}")
  message(FATAL_ERROR "pangu_core: PANGU_ENABLE_ASCEND is ON but the CANN toolkit was not found: "
                      "ASCEND_HOME_PATH='${PANGU_ASCEND_HOME}' is not a directory (source set_env.sh from CANN, "
                      "or build with PANGU_ENABLE_ASCEND=OFF)")
endif()

# ascendc.cmake reads these names.
set(ASCEND_CANN_PACKAGE_PATH "${PANGU_ASCEND_HOME}")
set(SOC_VERSION "Ascend910B1" CACHE STRING "Ascend SoC the kernel is compiled for (e.g. Ascend910B1..B4, Ascend910_93)")
set(RUN_MODE "npu" CACHE STRING "ascendc run mode: npu (device) or sim (CANN simulator)")

set(_pangu_ascendc_cmake "")
foreach(_dir compiler/tikcpp/ascendc_kernel_cmake tools/tikcpp/ascendc_kernel_cmake
             ascendc_devkit/tikcpp/samples/cmake)
  if(NOT _pangu_ascendc_cmake AND EXISTS "${PANGU_ASCEND_HOME}/${_dir}/ascendc.cmake")
    set(_pangu_ascendc_cmake "${PANGU_ASCEND_HOME}/${_dir}")
  endif()
endforeach()
if(NOT _pangu_ascendc_cmake)
  message(FATAL_ERROR "pangu_core: ascendc.cmake not found under ${PANGU_ASCEND_HOME} "
                      "(looked in compiler/tikcpp/ascendc_kernel_cmake and tools/tikcpp/ascendc_kernel_cmake)")
endif()
include(${_pangu_ascendc_cmake}/ascendc.cmake)

# torch and torch_npu from the Python the wheel is built for.
execute_process(
  COMMAND ${Python_EXECUTABLE} -c "import torch, os; print(torch.utils.cmake_prefix_path); print(os.path.dirname(torch.__file__)); print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); print(torch.__version__.split('+')[0])"
  OUTPUT_VARIABLE _pangu_torch_info OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _pangu_torch_rc)
execute_process(
  COMMAND ${Python_EXECUTABLE} -c "import os, torch_npu; print(os.path.dirname(torch_npu.__file__))"
  OUTPUT_VARIABLE _pangu_torch_npu_dir OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _pangu_torch_npu_rc)
if(NOT _pangu_torch_rc EQUAL 0 OR NOT _pangu_torch_npu_rc EQUAL 0)
  # pip's isolated build environments hold only the build requirements; skipping keeps such builds
  # working (the fused torch_npu operators still serve NPUs) and says how to get the kernel.
  message(WARNING "pangu_core: Ascend C kernels skipped: torch and torch_npu are not importable by "
                  "${Python_EXECUTABLE} (install with `pip install --no-build-isolation` in the "
                  "environment that has torch_npu)")
  return()
endif()
string(REPLACE "\n" ";" _pangu_torch_info "${_pangu_torch_info}")
list(GET _pangu_torch_info 0 _pangu_torch_cmake)
list(GET _pangu_torch_info 1 _pangu_torch_dir)
list(GET _pangu_torch_info 2 _pangu_torch_abi)
list(GET _pangu_torch_info 3 _pangu_torch_version)
# Recent torch headers use C++20 features; older torch_npu toolchains only need C++17.
if(_pangu_torch_version VERSION_GREATER_EQUAL "2.10")
  set(_pangu_ops_cxx_standard 20)
else()
  set(_pangu_ops_cxx_standard 17)
endif()

# The AI Core kernel, compiled by the ascendc toolchain.
ascendc_library(pangu_ascend_kernels STATIC ${CMAKE_CURRENT_LIST_DIR}/flash_attention_kernel.cpp)
ascendc_include_directories(pangu_ascend_kernels PRIVATE ${CMAKE_SOURCE_DIR})
ascendc_compile_options(pangu_ascend_kernels PRIVATE -O2)

find_package(Torch REQUIRED HINTS "${_pangu_torch_cmake}/Torch")

add_library(pangu_ascend_ops SHARED
  ${CMAKE_CURRENT_LIST_DIR}/torch_npu_op.cpp
  ${CMAKE_CURRENT_LIST_DIR}/host/flash_attention_tiling.cpp)
target_include_directories(pangu_ascend_ops PRIVATE
  ${CMAKE_SOURCE_DIR}
  ${CMAKE_SOURCE_DIR}/csrc
  ${TORCH_INCLUDE_DIRS}
  ${_pangu_torch_npu_dir}/include
  ${PANGU_ASCEND_HOME}/include
  ${PANGU_ASCEND_HOME}/include/experiment/platform
  ${PANGU_ASCEND_HOME}/include/experiment/runtime
  ${PANGU_ASCEND_HOME}/include/experiment/msprof)
target_link_directories(pangu_ascend_ops PRIVATE
  ${_pangu_torch_npu_dir}/lib
  ${PANGU_ASCEND_HOME}/lib64)
target_link_libraries(pangu_ascend_ops PRIVATE
  pangu_ascend_kernels
  ${TORCH_LIBRARIES}
  torch_npu
  ascendcl
  tiling_api
  platform)
# torch_npu wheels follow torch's C++ ABI flag; a mismatch fails at load time with missing symbols.
target_compile_definitions(pangu_ascend_ops PRIVATE _GLIBCXX_USE_CXX11_ABI=${_pangu_torch_abi})
target_compile_options(pangu_ascend_ops PRIVATE -O2 -Wall -Wno-unused-parameter)
set_target_properties(pangu_ascend_ops PROPERTIES
  OUTPUT_NAME pangu_ascend_ops
  CXX_STANDARD ${_pangu_ops_cxx_standard}
  INSTALL_RPATH "$ORIGIN;${_pangu_torch_dir}/lib;${_pangu_torch_npu_dir}/lib;${PANGU_ASCEND_HOME}/lib64")
install(TARGETS pangu_ascend_ops LIBRARY DESTINATION pangu_core)

target_compile_definitions(_core PRIVATE PANGU_ASCEND_BUILT=1)
message(STATUS "pangu_core: building the Ascend C flash-attention kernel for ${SOC_VERSION} "
               "(CANN at ${PANGU_ASCEND_HOME}, torch_npu at ${_pangu_torch_npu_dir})")
