// attnkit/version.hpp — the library's version as preprocessor macros, for #if tests and
// for printing. Kept in step with project(VERSION) in CMakeLists.txt, which refuses to
// configure when the two disagree; attnkitConfigVersion.cmake and attnkit.pc carry the
// same number. Not for: run-time feature checks (a header cannot tell which library
// build it is linked with).
#pragma once

#define ATTNKIT_VERSION_MAJOR 0
#define ATTNKIT_VERSION_MINOR 1
#define ATTNKIT_VERSION_PATCH 0
#define ATTNKIT_VERSION_STRING "0.1.0"

// One integer that orders versions: MAJOR * 10000 + MINOR * 100 + PATCH.
#define ATTNKIT_VERSION (ATTNKIT_VERSION_MAJOR * 10000 + ATTNKIT_VERSION_MINOR * 100 + ATTNKIT_VERSION_PATCH)
