# The plugins (included from gpu/CMakeLists.txt): the example (passes kernel-check), the example as an ABI-1 plugin
# (loaded; masked cases skipped) and one built for a future ABI version
# (refused). Both land in <build>/plugins/.
add_library(usp_naive_plugin MODULE plugins/naive_plugin.cu)
target_include_directories(usp_naive_plugin PRIVATE ${PROJECT_SOURCE_DIR}/include)
target_compile_options(usp_naive_plugin PRIVATE ${USP_CUDA_FLAGS})
target_link_libraries(usp_naive_plugin PRIVATE CUDA::cudart)
set_target_properties(usp_naive_plugin PROPERTIES OUTPUT_NAME naive_plugin PREFIX ""
  LIBRARY_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/plugins)

# The example built as an ABI-1 plugin: loaded, never handed a mask.
add_library(usp_naive_plugin_v1 MODULE plugins/naive_plugin.cu)
target_include_directories(usp_naive_plugin_v1 PRIVATE ${PROJECT_SOURCE_DIR}/include)
target_compile_options(usp_naive_plugin_v1 PRIVATE ${USP_CUDA_FLAGS})
target_compile_definitions(usp_naive_plugin_v1 PRIVATE NAIVE_PLUGIN_ABI=1u)
target_link_libraries(usp_naive_plugin_v1 PRIVATE CUDA::cudart)
set_target_properties(usp_naive_plugin_v1 PROPERTIES OUTPUT_NAME naive_plugin_v1 PREFIX ""
  LIBRARY_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/plugins)

add_library(usp_bad_abi_plugin MODULE plugins/bad_abi_plugin.c)
target_include_directories(usp_bad_abi_plugin PRIVATE ${PROJECT_SOURCE_DIR}/include)
target_compile_options(usp_bad_abi_plugin PRIVATE ${USP_WARNINGS})
set_target_properties(usp_bad_abi_plugin PROPERTIES OUTPUT_NAME bad_abi_plugin PREFIX ""
  LIBRARY_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/plugins)
