# The GPU executor (NCCL transport, bootstrap, launcher) -> usp_gpu_exec.
# Included from gpu/CMakeLists.txt; built only where NCCL is found.
#
# NCCL: header and library from one root, the first of
#   USP_NCCL_ROOT (cache), $NCCL_HOME, the CUDA toolkit, /usr, and the copy in
#   PyTorch's Python packages (nvidia/nccl: lib/ may hold only libnccl.so.2).
set(USP_NCCL_ROOT "" CACHE PATH "NCCL prefix holding include/nccl.h and lib/libnccl.so[.2]")

file(GLOB _usp_nccl_wheels
  /opt/torch/.venv/lib/python3*/site-packages/nvidia/nccl
  /usr/local/lib/python3*/dist-packages/nvidia/nccl
  /usr/lib/python3*/site-packages/nvidia/nccl)
set(_usp_nccl_roots ${USP_NCCL_ROOT} $ENV{NCCL_HOME} ${CUDAToolkit_LIBRARY_ROOT} /usr/local/cuda /usr
  ${_usp_nccl_wheels})

if(NOT USP_NCCL_LIBRARY OR NOT USP_NCCL_INCLUDE_DIR)
  foreach(root IN LISTS _usp_nccl_roots)
    if(NOT root OR NOT EXISTS ${root}/include/nccl.h)
      continue()
    endif()
    foreach(lib lib/libnccl.so lib64/libnccl.so lib/x86_64-linux-gnu/libnccl.so
                lib/libnccl.so.2 lib64/libnccl.so.2 lib/x86_64-linux-gnu/libnccl.so.2)
      if(EXISTS ${root}/${lib})
        set(USP_NCCL_INCLUDE_DIR ${root}/include CACHE PATH "NCCL headers" FORCE)
        set(USP_NCCL_LIBRARY ${root}/${lib} CACHE FILEPATH "NCCL library" FORCE)
        break()
      endif()
    endforeach()
    if(USP_NCCL_LIBRARY)
      break()
    endif()
  endforeach()
endif()

if(NOT USP_NCCL_LIBRARY OR NOT USP_NCCL_INCLUDE_DIR)
  message(STATUS "usp: NCCL not found (set USP_NCCL_ROOT); no GPU executor, `usp run --backend gpu` is absent")
  return()
endif()
message(STATUS "usp: NCCL from ${USP_NCCL_LIBRARY}")

add_library(usp_gpu_exec STATIC
  bootstrap.c launch.c nccl_transport.c executor_ctx.c executor.c executor_kernels.cu)
target_include_directories(usp_gpu_exec
  PUBLIC ${PROJECT_SOURCE_DIR}/include ${USP_NCCL_INCLUDE_DIR}
  PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_options(usp_gpu_exec PRIVATE
  $<$<COMPILE_LANGUAGE:C>:${USP_WARNINGS}>
  $<$<COMPILE_LANGUAGE:CUDA>:${USP_CUDA_FLAGS}>)
# linked by full path: a wheel's lib/ may have libnccl.so.2 and no libnccl.so
target_link_libraries(usp_gpu_exec PUBLIC usp_gpu usp_core CUDA::cudart ${USP_NCCL_LIBRARY})
set_target_properties(usp_gpu_exec PROPERTIES POSITION_INDEPENDENT_CODE ON)
