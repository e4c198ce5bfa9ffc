# cmake/install_tests.cmake — the tests of attnkit as a library a user consumes: the README
# example (the same code as README.md's) built against the public target only, the
# umbrella header's completeness, and an install into a temporary prefix consumed with
# find_package and pkg-config (tests/install/install_test.sh). Included by CMakeLists.txt
# when ATTNKIT_TESTS is ON.
# Not for: the library's behaviour (tests/*_test.cpp).

# The README's example, linked with attnkit::attnkit and nothing internal.
add_executable(attnkit_example_quickstart examples/quickstart.cpp)
target_link_libraries(attnkit_example_quickstart PRIVATE attnkit::attnkit)
add_test(NAME example_quickstart COMMAND attnkit_example_quickstart)
set_tests_properties(example_quickstart PROPERTIES
                     PASS_REGULAR_EXPRESSION "row 0: 0\nrow 1: 0.5\nrow 2: 1\nrow 3: 1.5\n")

add_test(NAME readme_example_is_quickstart
         COMMAND ${CMAKE_COMMAND} -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
                 -P ${PROJECT_SOURCE_DIR}/tests/install/check_readme_example.cmake)
add_test(NAME umbrella_header_complete
         COMMAND ${CMAKE_COMMAND} -DINCLUDE_DIR=${PROJECT_SOURCE_DIR}/include
                 -P ${PROJECT_SOURCE_DIR}/tests/install/check_umbrella.cmake)

# The installed package. Not under sanitizers: the consumer would have to be built with the
# same runtime, and the install rules do not change with them.
if(ATTNKIT_INSTALL AND NOT ATTNKIT_SANITIZE)
  find_program(ATTNKIT_BASH bash REQUIRED)
  add_test(NAME install_consumer
           COMMAND ${ATTNKIT_BASH} ${PROJECT_SOURCE_DIR}/tests/install/install_test.sh ${CMAKE_COMMAND}
                   ${PROJECT_BINARY_DIR} ${PROJECT_BINARY_DIR}/install-test ${CMAKE_CXX_COMPILER} ${PROJECT_SOURCE_DIR})
  set_tests_properties(install_consumer PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS install)
endif()
