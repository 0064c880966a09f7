# The whole-model planner, part of usp_sim (included from sim/CMakeLists.txt).
set(USP_PLAN_EMBEDDED ${CMAKE_CURRENT_BINARY_DIR}/plan_models_embedded.c)
usp_embed_json(${USP_PLAN_EMBEDDED} ${CMAKE_CURRENT_SOURCE_DIR}/models plan/plan_internal.h plan_embedded_model
               PLAN_EMBEDDED_MODELS PLAN_NEMBEDDED_MODELS "model descriptions")
# plan_sendto.cpp: SimGrid's host-to-host transfer, in its C++ API only
# (C++ is enabled by sim/CMakeLists.txt).
target_sources(usp_sim PRIVATE plan/plan_sendto.cpp plan/plan.c plan/plan_model.c plan/plan_costs.c plan/plan_program.c
  plan/plan_sim.c plan/plan_print.c ${USP_PLAN_EMBEDDED})
# The programs that link usp_sim are C, linked by the C driver: name the C++ runtime
# (CMake adds it from g++'s implicit libraries, not from clang++'s).
target_link_libraries(usp_sim PUBLIC stdc++)
