# The whole-model planner, part of usp_sim (included from sim/CMakeLists.txt).
#
# Run as a script it writes OUT: a C file holding every sim/models/*.json as
# a string, so the `usp` binary knows the built-in models from any directory:
#   cmake -DOUT=plan_models_embedded.c -DDIR=sim/models -P plan.cmake
if(CMAKE_SCRIPT_MODE_FILE)
  file(GLOB models "${DIR}/*.json")
  list(SORT models)
  set(body "/* Generated from sim/models/<name>.json by sim/plan.cmake. */\n#include \"plan_internal.h\"\n\nconst plan_embedded_model PLAN_EMBEDDED_MODELS[] = {\n")
  set(count 0)
  foreach(path ${models})
    get_filename_component(name "${path}" NAME_WE)
    file(READ "${path}" text)
    string(REPLACE "\\" "\\\\" text "${text}")
    string(REPLACE "\"" "\\\"" text "${text}")
    string(REPLACE "\n" "\\n\"\n    \"" text "${text}")
    string(APPEND body "  {\"${name}\",\n    \"${text}\"},\n")
    math(EXPR count "${count} + 1")
  endforeach()
  string(APPEND body "};\nconst int PLAN_NEMBEDDED_MODELS = ${count};\n")
  file(WRITE "${OUT}.tmp" "${body}")
  file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
  file(REMOVE "${OUT}.tmp")
  return()
endif()

file(GLOB USP_PLAN_MODELS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/models/*.json)
set(USP_PLAN_EMBEDDED ${CMAKE_CURRENT_BINARY_DIR}/plan_models_embedded.c)
add_custom_command(
  OUTPUT ${USP_PLAN_EMBEDDED}
  COMMAND ${CMAKE_COMMAND} -DOUT=${USP_PLAN_EMBEDDED} -DDIR=${CMAKE_CURRENT_SOURCE_DIR}/models
          -P ${CMAKE_CURRENT_SOURCE_DIR}/plan.cmake
  DEPENDS ${USP_PLAN_MODELS} ${CMAKE_CURRENT_SOURCE_DIR}/plan.cmake
  COMMENT "Embedding the model descriptions")
target_sources(usp_sim PRIVATE plan.c plan_model.c plan_costs.c plan_program.c plan_sim.c
  plan_print.c ${USP_PLAN_EMBEDDED})
