# The kernels of usp_gpu (included from gpu/CMakeLists.txt, after usp_gpu).
# Kernels on Hopper's warpgroup MMA: built for sm_90a alone (wgmma does not
# exist in plain sm_90), linked into usp_gpu.
add_library(usp_gpu_sm90a OBJECT kernels/attn_fwd_wg.cu kernels/attn_fwd_ws.cu kernels/attn_bwd_wg.cu
  kernels/attn_bwd_wg256.cu kernels/attn_bwd_ws.cu)
set_target_properties(usp_gpu_sm90a PROPERTIES CUDA_ARCHITECTURES OFF POSITION_INDEPENDENT_CODE ON)
target_compile_options(usp_gpu_sm90a PRIVATE ${USP_CUDA_FLAGS} -gencode=arch=compute_90a,code=sm_90a)
target_include_directories(usp_gpu_sm90a PRIVATE ${CMAKE_CURRENT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/include)

target_sources(usp_gpu PRIVATE
  kernels/builtin.cu kernels/attn_fwd.cu kernels/attn_bwd.cu kernels/rows.cu kernels/pack.cu kernels/maskplan.cu
  $<TARGET_OBJECTS:usp_gpu_sm90a>)
