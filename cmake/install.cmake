# cmake/install.cmake — what `cmake --install` puts under the prefix, and how consumers find
# it. Included by CMakeLists.txt when ATTNKIT_INSTALL is ON (the default in attnkit's own build).
#   lib/libattnkit.{a,so}              the library (static or shared, as BUILD_SHARED_LIBS says)
#   include/attnkit/*.hpp              the public headers (attnkit.hpp includes them all)
#   bin/attnkit                        the CLI (when ATTNKIT_CLI)
#   lib/cmake/attnkit/                 attnkitConfig.cmake, attnkitConfigVersion.cmake and the
#                                      exported target attnkit::attnkit (attnkitTargets.cmake)
#   lib/pkgconfig/attnkit.pc           for pkg-config
#   share/doc/attnkit/LICENSE
# Not for: the build tree's own use (in-tree and add_subdirectory() users link the target).

include(CMakePackageConfigHelpers)

set(ATTNKIT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/attnkit)

install(TARGETS attnkit EXPORT attnkitTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        FILE_SET HEADERS DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})  # for consumers older than CMake 3.23
if(ATTNKIT_CLI)
  install(TARGETS attnkit_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(EXPORT attnkitTargets NAMESPACE attnkit:: DESTINATION ${ATTNKIT_CMAKE_DIR})
install(FILES ${PROJECT_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR})

# A static archive records its private dependencies as link-only entries of the exported
# target, so the package must find them again; a shared library carries them itself.
get_target_property(_attnkit_type attnkit TYPE)
if(_attnkit_type STREQUAL "STATIC_LIBRARY")
  set(ATTNKIT_FIND_DEPENDENCIES "find_dependency(fmt)\nfind_dependency(hwy)\nfind_dependency(OpenMP COMPONENTS CXX)\nfind_dependency(PNG)\nset(BLA_VENDOR OpenBLAS)\nfind_dependency(BLAS)")
else()
  set(ATTNKIT_FIND_DEPENDENCIES "")
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/attnkitConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/attnkitConfig.cmake
                              INSTALL_DESTINATION ${ATTNKIT_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/attnkitConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/attnkitConfig.cmake ${PROJECT_BINARY_DIR}/attnkitConfigVersion.cmake
        DESTINATION ${ATTNKIT_CMAKE_DIR})

# pkg-config. The dependencies that have .pc files go in Requires, OpenMP's runtime (it has
# none) in Libs. For a shared library they are private (only `pkg-config --static` lists
# them); for a static archive they are public, so that the plain
# `pkg-config --cflags --libs attnkit` links as well as `--static` does.
set(_omp_libs)
foreach(_lib ${OpenMP_CXX_LIB_NAMES})
  string(APPEND _omp_libs " -l${_lib}")
endforeach()
string(STRIP "${_omp_libs}" _omp_libs)
if(_attnkit_type STREQUAL "STATIC_LIBRARY")
  set(ATTNKIT_PC_REQUIRES "Requires: fmt libhwy libpng openblas")
  set(ATTNKIT_PC_LIBS "-L\${libdir} -lattnkit ${_omp_libs}")
  set(ATTNKIT_PC_LIBS_PRIVATE "")
else()
  set(ATTNKIT_PC_REQUIRES "Requires.private: fmt libhwy libpng openblas")
  set(ATTNKIT_PC_LIBS "-L\${libdir} -lattnkit")
  set(ATTNKIT_PC_LIBS_PRIVATE "Libs.private: ${_omp_libs}")
endif()
# The prefix is known only when installing (`cmake --install build --prefix P` may differ
# from CMAKE_INSTALL_PREFIX at configure time), so the .pc is written by the install step.
foreach(_dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_dir}}")
    set(ATTNKIT_PC_${_dir} "${CMAKE_INSTALL_${_dir}}")
  else()
    set(ATTNKIT_PC_${_dir} "\${prefix}/${CMAKE_INSTALL_${_dir}}")
  endif()
endforeach()
set(ATTNKIT_PC_PREFIX "@ATTNKIT_PC_PREFIX@")  # kept for the install step to fill in
configure_file(${PROJECT_SOURCE_DIR}/cmake/attnkit.pc.in ${PROJECT_BINARY_DIR}/attnkit.pc.in @ONLY)
install(CODE "
  set(ATTNKIT_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  configure_file(\"${PROJECT_BINARY_DIR}/attnkit.pc.in\" \"${PROJECT_BINARY_DIR}/attnkit.pc\" @ONLY)
")
install(FILES ${PROJECT_BINARY_DIR}/attnkit.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
