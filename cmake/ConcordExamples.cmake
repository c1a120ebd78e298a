# How CI runs each program in examples/: every examples/<name>.cpp says in its header comment
#
#   // ci: ARGUMENTS             the command line (shell-style words; may be empty)
#   // ci-expect: REGEX          what its output must match (optional)
#
# where ARGUMENTS may use @FIXTURES@ (tests/fixtures in the source tree), @SOURCE@ (the source
# tree) and @OUT@ (a fresh folder for the run's outputs, removed before each run). tests/examples
# runs the in-tree build of each example with them, tests/install the build against the
# installed package; an example without a `// ci:` line fails both, naming the file. So a new
# examples/*.cpp is built and run by CI with no CMake edit.

# concord_example_ci(<source> <out dir> <args var> <expect var>): the example's arguments
# (a list, with the placeholders filled in) and its expected-output regex. <args var> is
# set to NOTFOUND when the file has no `// ci:` line (or more than one).
function(concord_example_ci source out_dir args_var expect_var)
  file(STRINGS "${source}" _ci REGEX "^// ci:( |$)")
  file(STRINGS "${source}" _expect REGEX "^// ci-expect: ")
  list(LENGTH _ci _n)
  if(NOT _n EQUAL 1)
    set(${args_var} NOTFOUND PARENT_SCOPE)
    set(${expect_var} "" PARENT_SCOPE)
    return()
  endif()
  string(REGEX REPLACE "^// ci: ?" "" _line "${_ci}")
  string(REPLACE "@FIXTURES@" "${PROJECT_SOURCE_DIR}/tests/fixtures" _line "${_line}")
  string(REPLACE "@SOURCE@" "${PROJECT_SOURCE_DIR}" _line "${_line}")
  string(REPLACE "@OUT@" "${out_dir}" _line "${_line}")
  separate_arguments(_args UNIX_COMMAND "${_line}")
  string(REGEX REPLACE "^// ci-expect: " "" _re "${_expect}")
  set(${args_var} "${_args}" PARENT_SCOPE)
  set(${expect_var} "${_re}" PARENT_SCOPE)
endfunction()

# concord_add_example_test(<test name> <source> <executable> <out dir> [FIXTURES_REQUIRED f])
# One ctest entry that removes <out dir>, runs <executable> with the example's `// ci:` line and
# checks its exit status and `// ci-expect:` regex (tests/examples/run_example.cmake).
function(concord_add_example_test test source executable out_dir)
  cmake_parse_arguments(ARG "" "FIXTURES_REQUIRED" "" ${ARGN})
  concord_example_ci("${source}" "${out_dir}" _args _expect)
  file(RELATIVE_PATH _rel "${PROJECT_SOURCE_DIR}" "${source}")
  if(_args STREQUAL "NOTFOUND")
    add_test(NAME ${test} COMMAND "${CMAKE_COMMAND}"
      "-DMESSAGE=${_rel} has no '// ci: ARGUMENTS' line (exactly one) in its header comment saying how CI runs it (cmake/ConcordExamples.cmake)"
      -P "${PROJECT_SOURCE_DIR}/tests/examples/run_example.cmake")
  else()
    string(JOIN "^^" _joined ${_args})
    add_test(NAME ${test} COMMAND "${CMAKE_COMMAND}"
      "-DEXECUTABLE=${executable}" "-DARGS=${_joined}" "-DOUT=${out_dir}" "-DEXPECT=${_expect}"
      "-DSOURCE=${_rel}" -P "${PROJECT_SOURCE_DIR}/tests/examples/run_example.cmake")
  endif()
  set_tests_properties(${test} PROPERTIES LABELS integration TIMEOUT 300)
  if(ARG_FIXTURES_REQUIRED)
    set_tests_properties(${test} PROPERTIES FIXTURES_REQUIRED ${ARG_FIXTURES_REQUIRED})
  endif()
endfunction()
