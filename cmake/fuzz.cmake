# cmake/fuzz.cmake — builds the libFuzzer targets and registers short fuzz runs with ctest.
# Included by CMakeLists.txt when ATTNKIT_FUZZ and ATTNKIT_TESTS are ON. The main build
# uses g++, which has no libFuzzer, so the fuzzers are compiled by clang++ directly through
# custom commands. Without a working clang++ + libFuzzer the fuzz targets are switched off
# with a message naming the reason (scripts/setup.sh installs both); with
# ATTNKIT_REQUIRE_TOOLS (scripts/test.sh) that is a configuration error instead, so the fuzz
# run can never drop out of CI unnoticed.
# Not for: running long fuzz campaigns (run build/fuzz/npy_fuzz by hand for that).

find_program(ATTNKIT_FUZZ_CXX NAMES clang++ clang++-14 DOC "clang++ used to build the libFuzzer targets")
if(NOT ATTNKIT_FUZZ_CXX)
  attnkit_missing_tool(ATTNKIT_FUZZ "clang++ (clang)")
  return()
endif()

set(ATTNKIT_FUZZ_FLAGS -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
    -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-parameter)
set(ATTNKIT_FUZZ_DIR ${PROJECT_BINARY_DIR}/fuzz)
file(MAKE_DIRECTORY ${ATTNKIT_FUZZ_DIR})

# Probe once per compiler: clang++ may be present without libFuzzer (libclang-rt-*-dev), and
# fmt must link with it. A failed probe is a message, not a configure error; it is cached
# per compiler path, so pointing ATTNKIT_FUZZ_CXX elsewhere probes again.
if(NOT "${ATTNKIT_FUZZ_PROBED_CXX}" STREQUAL "${ATTNKIT_FUZZ_CXX}")
  set(_probe_src ${ATTNKIT_FUZZ_DIR}/probe.cpp)
  file(WRITE ${_probe_src} [=[
#include <cstddef>
#include <cstdint>
#include <fmt/format.h>
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fmt::format("{}", size).empty() ? 1 : 0;
}
]=])
  execute_process(
    COMMAND ${ATTNKIT_FUZZ_CXX} ${ATTNKIT_FUZZ_FLAGS} ${_probe_src} -lfmt -o ${ATTNKIT_FUZZ_DIR}/probe
    RESULT_VARIABLE _probe_rc OUTPUT_VARIABLE _probe_out ERROR_VARIABLE _probe_out)
  if(_probe_rc EQUAL 0)
    set(ATTNKIT_FUZZ_WORKS ON CACHE INTERNAL "clang++ can build libFuzzer + ASan/UBSan targets linked with fmt")
  else()
    set(ATTNKIT_FUZZ_WORKS OFF CACHE INTERNAL "clang++ can build libFuzzer + ASan/UBSan targets linked with fmt")
    message(STATUS "attnkit fuzz: probing ${ATTNKIT_FUZZ_CXX} for libFuzzer failed:\n${_probe_out}")
  endif()
  set(ATTNKIT_FUZZ_PROBED_CXX ${ATTNKIT_FUZZ_CXX} CACHE INTERNAL "compiler ATTNKIT_FUZZ_WORKS was probed with")
endif()
if(NOT ATTNKIT_FUZZ_WORKS)
  attnkit_missing_tool(ATTNKIT_FUZZ "a clang++ that links libFuzzer targets with fmt (libclang-rt-14-dev)")
  return()
endif()
message(STATUS "attnkit fuzz: building libFuzzer targets with ${ATTNKIT_FUZZ_CXX}")

# attnkit_add_fuzzer(NAME SOURCES...): builds ${ATTNKIT_FUZZ_DIR}/NAME from fuzz/NAME.cpp
# plus the library SOURCES it exercises. One object per source keeps rebuilds incremental
# and lets -j2 compile two at once; DEPFILE tracks the headers each object includes.
function(attnkit_add_fuzzer name)
  set(objects)
  foreach(src fuzz/${name}.cpp ${ARGN})
    string(MAKE_C_IDENTIFIER ${src} obj_name)
    set(obj ${ATTNKIT_FUZZ_DIR}/${name}.objs/${obj_name}.o)
    add_custom_command(
      OUTPUT ${obj}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${ATTNKIT_FUZZ_DIR}/${name}.objs
      COMMAND ${ATTNKIT_FUZZ_CXX} ${ATTNKIT_FUZZ_FLAGS} -I${PROJECT_SOURCE_DIR}/include -I${PROJECT_SOURCE_DIR}/src -MD -MF ${obj}.d
              -c ${PROJECT_SOURCE_DIR}/${src} -o ${obj}
      DEPENDS ${PROJECT_SOURCE_DIR}/${src}
      DEPFILE ${obj}.d
      COMMENT "Compiling ${src} for ${name} with clang++ (libFuzzer + ASan + UBSan)"
      VERBATIM)
    list(APPEND objects ${obj})
  endforeach()
  add_custom_command(
    OUTPUT ${ATTNKIT_FUZZ_DIR}/${name}
    COMMAND ${ATTNKIT_FUZZ_CXX} ${ATTNKIT_FUZZ_FLAGS} ${objects} -lfmt -o ${ATTNKIT_FUZZ_DIR}/${name}
    DEPENDS ${objects}
    COMMENT "Linking fuzz target ${name}"
    VERBATIM)
  add_custom_target(${name} ALL DEPENDS ${ATTNKIT_FUZZ_DIR}/${name})
endfunction()

# attnkit_add_fuzz_test(NAME SECONDS): a ctest run of NAME for SECONDS over a working copy
# of fuzz/corpus/NAME-without-_fuzz. libFuzzer adds new inputs to its first corpus
# directory and writes crash files to its artifact prefix, so both live in the build tree
# and the committed seeds are only ever read.
function(attnkit_add_fuzz_test name seconds)
  string(REGEX REPLACE "_fuzz$" "" corpus_name ${name})
  set(seeds ${PROJECT_SOURCE_DIR}/fuzz/corpus/${corpus_name})
  set(work ${ATTNKIT_FUZZ_DIR}/${name}.corpus)
  set(artifacts ${ATTNKIT_FUZZ_DIR}/${name}.artifacts)
  add_test(NAME ${name}_corpus
           COMMAND ${CMAKE_COMMAND} -E copy_directory ${seeds} ${work})
  set_tests_properties(${name}_corpus PROPERTIES FIXTURES_SETUP ${name}_corpus LABELS fuzz)
  set(dict_args)
  if(EXISTS ${PROJECT_SOURCE_DIR}/fuzz/${corpus_name}.dict)
    set(dict_args -dict=${PROJECT_SOURCE_DIR}/fuzz/${corpus_name}.dict)
  endif()
  file(MAKE_DIRECTORY ${artifacts})
  add_test(NAME ${name}_short
           COMMAND ${ATTNKIT_FUZZ_DIR}/${name} ${work} ${dict_args} -max_total_time=${seconds}
                   -rss_limit_mb=2048 -timeout=10 -artifact_prefix=${artifacts}/ -print_final_stats=1
           WORKING_DIRECTORY ${ATTNKIT_FUZZ_DIR})
  set_tests_properties(${name}_short PROPERTIES FIXTURES_REQUIRED ${name}_corpus LABELS fuzz
                       TIMEOUT ${seconds}0)
endfunction()

attnkit_add_fuzzer(npy_fuzz src/io/npy.cpp src/core/tensor.cpp)
attnkit_add_fuzz_test(npy_fuzz 20)
attnkit_add_fuzzer(safetensors_fuzz src/io/safetensors.cpp src/io/atomic_file.cpp)
attnkit_add_fuzz_test(safetensors_fuzz 15)
attnkit_add_fuzzer(model_config_fuzz src/model/config.cpp src/core/method.cpp src/pattern/pattern.cpp src/pattern/pattern_kinds.cpp
                   src/pattern/pattern_parse.cpp src/core/rope.cpp src/core/shape.cpp src/core/tensor.cpp src/core/view_checks.cpp)
attnkit_add_fuzz_test(model_config_fuzz 15)
attnkit_add_fuzzer(llama2c_fuzz src/model/llama2c.cpp src/model/model.cpp src/model/config.cpp src/core/method.cpp
                   src/pattern/pattern.cpp src/pattern/pattern_kinds.cpp src/pattern/pattern_parse.cpp src/core/rope.cpp
                   src/core/shape.cpp src/core/tensor.cpp src/core/view_checks.cpp src/io/atomic_file.cpp)
attnkit_add_fuzz_test(llama2c_fuzz 15)
attnkit_add_fuzzer(tokenizer_fuzz src/model/tokenizer.cpp src/ref/tokenizer_ref.cpp src/io/atomic_file.cpp)
attnkit_add_fuzz_test(tokenizer_fuzz 15)
