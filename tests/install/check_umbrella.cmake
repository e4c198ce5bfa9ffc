# Checks that include/attnkit/attnkit.hpp includes every public header of include/attnkit,
# so a header added to the API cannot be missing from the umbrella. Run by ctest as
#   cmake -DINCLUDE_DIR=<source>/include -P check_umbrella.cmake
file(GLOB headers RELATIVE ${INCLUDE_DIR} ${INCLUDE_DIR}/attnkit/*.hpp)
file(READ ${INCLUDE_DIR}/attnkit/attnkit.hpp umbrella)
set(missing)
foreach(h ${headers})
  if(NOT h STREQUAL "attnkit/attnkit.hpp" AND NOT umbrella MATCHES "#include \"${h}\"")
    list(APPEND missing ${h})
  endif()
endforeach()
if(missing)
  message(FATAL_ERROR "include/attnkit/attnkit.hpp does not include: ${missing}")
endif()
list(LENGTH headers n)
message(STATUS "attnkit.hpp includes all ${n} other public headers")
