# Where NCCL is (included from gpu/executor/executor.cmake): sets USP_NCCL_INCLUDE_DIR
# and USP_NCCL_LIBRARY, or leaves them empty.
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
