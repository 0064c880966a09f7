# Built-in JSON texts (device profiles, models) compiled into the `usp`
# binary, so it knows them from any directory.
#
# Included, this file defines usp_embed_json(). Run as a script it writes OUT,
# a C file holding every DIR/*.json as a {name, text} entry of ARRAY (of TYPE,
# declared in HEADER) and their number in COUNT:
#   cmake -DOUT=x.c -DDIR=sim/profiles -DFROM=sim/profiles -DHEADER=internal.h
#         -DTYPE=sim_embedded_profile -DARRAY=SIM_EMBEDDED_PROFILES
#         -DCOUNT=SIM_NEMBEDDED_PROFILES -P embed_json.cmake
if(CMAKE_SCRIPT_MODE_FILE)
  file(GLOB files "${DIR}/*.json")
  list(SORT files)
  set(body "/* Generated from ${FROM}/<name>.json by sim/embed_json.cmake. */\n#include \"${HEADER}\"\n\nconst ${TYPE} ${ARRAY}[] = {\n")
  set(count 0)
  foreach(path ${files})
    get_filename_component(name "${path}" NAME_WE)
    file(READ "${path}" text)
    string(REPLACE "\\" "\\\\" text "${text}")
    string(REPLACE "\"" "\\\"" text "${text}")
    string(REPLACE "\n" "\\n\"\n    \"" text "${text}")
    string(APPEND body "  {\"${name}\",\n    \"${text}\"},\n")
    math(EXPR count "${count} + 1")
  endforeach()
  string(APPEND body "};\nconst int ${COUNT} = ${count};\n")
  file(WRITE "${OUT}.tmp" "${body}")
  file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
  file(REMOVE "${OUT}.tmp")
  return()
endif()

# Generates OUT from the JSON files of DIR, regenerated when one changes;
# WHAT names them in the build's progress line.
function(usp_embed_json OUT DIR HEADER TYPE ARRAY COUNT WHAT)
  file(GLOB jsons CONFIGURE_DEPENDS ${DIR}/*.json)
  file(RELATIVE_PATH from ${PROJECT_SOURCE_DIR} ${DIR})
  add_custom_command(
    OUTPUT ${OUT}
    COMMAND ${CMAKE_COMMAND} -DOUT=${OUT} -DDIR=${DIR} -DFROM=${from} -DHEADER=${HEADER} -DTYPE=${TYPE}
            -DARRAY=${ARRAY} -DCOUNT=${COUNT} -P ${CMAKE_CURRENT_FUNCTION_LIST_FILE}
    DEPENDS ${jsons} ${CMAKE_CURRENT_FUNCTION_LIST_FILE}
    COMMENT "Embedding the ${WHAT}"
    VERBATIM)
endfunction()
