# cmake -P script behind the example tests (cmake/ConcordExamples.cmake): removes OUT, runs
# EXECUTABLE with ARGS ("^^"-separated), fails on a non-zero exit status or when the output does
# not match EXPECT. MESSAGE alone: fail with it (an example without a `// ci:` line).
if(DEFINED MESSAGE)
  message(FATAL_ERROR "${MESSAGE}")
endif()
file(REMOVE_RECURSE "${OUT}")
string(REPLACE "^^" ";" args "${ARGS}")
get_filename_component(workdir "${OUT}" DIRECTORY)
file(MAKE_DIRECTORY "${workdir}")
execute_process(COMMAND "${EXECUTABLE}" ${args} WORKING_DIRECTORY "${workdir}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${SOURCE}: ${EXECUTABLE} ${args}\n${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE}: exit status ${rc}")
endif()
if(EXPECT AND NOT out MATCHES "${EXPECT}")
  message(FATAL_ERROR "${SOURCE}: the output does not match '${EXPECT}' (its // ci-expect: line)")
endif()
