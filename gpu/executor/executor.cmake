# The GPU executor (NCCL transport, bootstrap, launcher) -> usp_gpu_exec.
# Included from gpu/CMakeLists.txt; built only where NCCL is found.
include(${CMAKE_CURRENT_SOURCE_DIR}/transport/nccl.cmake) # NCCL's header and library
if(NOT USP_NCCL_LIBRARY OR NOT USP_NCCL_INCLUDE_DIR)
  message(STATUS "usp: NCCL not found (set USP_NCCL_ROOT); no GPU executor, `usp run --backend gpu` is absent")
  return()
endif()
message(STATUS "usp: NCCL from ${USP_NCCL_LIBRARY}")

add_library(usp_gpu_exec STATIC
  transport/bootstrap.c transport/launch.c transport/transport.c transport/nccl_transport.c
  transport/ipc_transport.c
  executor/executor_ctx.c executor/executor.c executor/executor_kernels.cu)
target_include_directories(usp_gpu_exec
  PUBLIC ${PROJECT_SOURCE_DIR}/include ${USP_NCCL_INCLUDE_DIR}
  PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_options(usp_gpu_exec PRIVATE
  $<$<COMPILE_LANGUAGE:C>:${USP_WARNINGS}>
  $<$<COMPILE_LANGUAGE:CUDA>:${USP_CUDA_FLAGS}>)
# linked by full path: a wheel's lib/ may have libnccl.so.2 and no libnccl.so
target_link_libraries(usp_gpu_exec PUBLIC usp_gpu usp_core CUDA::cudart ${USP_NCCL_LIBRARY})
set_target_properties(usp_gpu_exec PROPERTIES POSITION_INDEPENDENT_CODE ON)
# tests/test_ipc_transport compiles the IPC transport against the toolkit's headers alone
set_property(GLOBAL PROPERTY USP_CUDA_INCLUDE_DIRS ${CUDAToolkit_INCLUDE_DIRS})
