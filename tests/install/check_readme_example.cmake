# Checks that README.md's C++ example is examples/quickstart.cpp (from its first #include
# to the end), so the code a reader copies is the code the tests build and run. Run by
# ctest as   cmake -DSOURCE_DIR=<source> -P check_readme_example.cmake
file(READ ${SOURCE_DIR}/README.md readme)
file(READ ${SOURCE_DIR}/examples/quickstart.cpp example)
set(first "#include <attnkit/attnkit.hpp>")
string(FIND "${example}" "${first}" start)
string(SUBSTRING "${example}" ${start} -1 example)
string(FIND "${readme}" "```cpp\n${first}" start)
if(start EQUAL -1)
  message(FATAL_ERROR "README.md has no ```cpp block starting with ${first}")
endif()
math(EXPR start "${start} + 7")
string(SUBSTRING "${readme}" ${start} -1 block)
string(FIND "${block}" "\n```" end)
math(EXPR end "${end} + 1")
string(SUBSTRING "${block}" 0 ${end} block)
if(NOT block STREQUAL example)
  file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/readme_example.cpp "${block}")
  message(FATAL_ERROR "README.md's example differs from examples/quickstart.cpp "
                      "(README's version written to ${CMAKE_CURRENT_BINARY_DIR}/readme_example.cpp)")
endif()
message(STATUS "README.md's example is examples/quickstart.cpp")
