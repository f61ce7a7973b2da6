# cmake -DCOMMAND="a;b;c" -DEXIT_CODE=2 -DPATTERN=regex -P expect_failure.cmake
# Passes when the command exits with EXIT_CODE and its stderr matches PATTERN.
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("exit code: ${rc}\nstdout:\n${out}\nstderr:\n${err}")
if(NOT rc STREQUAL "${EXIT_CODE}")
  message(FATAL_ERROR "expected exit code ${EXIT_CODE}, got '${rc}'")
endif()
if(NOT err MATCHES "${PATTERN}")
  message(FATAL_ERROR "stderr does not match '${PATTERN}'")
endif()
