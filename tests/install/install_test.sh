#!/usr/bin/env bash
# Installs a built attnkit into a fresh temporary prefix and builds tests/install/consumer
# against it twice, as a user would: with CMake's find_package(attnkit) and with
# `pkg-config --cflags --libs attnkit`; runs both consumers (a causal attend() checked
# against a hand computation) and the README example built the same way.
# Usage: install_test.sh CMAKE BUILD_DIR WORK_DIR CXX SOURCE_DIR   (registered with ctest by
# cmake/install_tests.cmake). Exit 77 (ctest: skipped) only when pkg-config is missing,
# after the find_package half has passed. Not for: testing the library's behaviour.
set -euo pipefail
cmake=$1 build=$2 work=$3 cxx=$4 src=$5
consumer=$src/tests/install/consumer
prefix=$work/prefix

fail() { echo "install_test: FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

rm -rf "$work"
mkdir -p "$work"

step "cmake --install into $prefix"
"$cmake" --install "$build" --prefix "$prefix" > "$work/install.log" || { cat "$work/install.log"; fail "install"; }
[ -f "$prefix/include/attnkit/attnkit.hpp" ] || fail "umbrella header not installed"
[ -f "$prefix/include/attnkit/version.hpp" ] || fail "version header not installed"
[ -z "$(find "$prefix/include" -mindepth 2 -type d)" ] || fail "internal headers installed: $(find "$prefix/include" -mindepth 2 -type d)"
config=$(find "$prefix" -name attnkitConfig.cmake)
[ -n "$config" ] || fail "attnkitConfig.cmake not installed"
for f in attnkitConfigVersion.cmake attnkitTargets.cmake; do
  [ -f "$(dirname "$config")/$f" ] || fail "$f not installed beside attnkitConfig.cmake"
done
pc=$(find "$prefix" -name attnkit.pc)
[ -n "$pc" ] || fail "attnkit.pc not installed"
# The package must not point back into the source or build tree (the .pc names its prefix,
# which lies in the build tree here).
if grep -rn -e "$src/include" -e "$src/src" -e "$build/" "$(dirname "$config")" \
   || grep -v '^prefix=' "$pc" | grep -n -e "$src/" -e "$build/"; then
  fail "installed package files name the source or build tree"
fi
header_version=$(sed -n 's/^#define ATTNKIT_VERSION_STRING "\(.*\)"$/\1/p' "$prefix/include/attnkit/version.hpp")
if [ -x "$prefix/bin/attnkit" ]; then
  cli_version=$("$prefix/bin/attnkit" --version) || fail "installed CLI does not run"
  [ "$cli_version" = "attnkit $header_version" ] || fail "installed CLI says '$cli_version', version.hpp $header_version"
fi

step "consumer with find_package(attnkit CONFIG)"
"$cmake" -S "$consumer" -B "$work/cmake" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  -DATTNKIT_EXAMPLE="$src/examples/quickstart.cpp" > "$work/cmake-configure.log" \
  || { cat "$work/cmake-configure.log"; fail "consumer configure"; }
grep -q "consumer: attnkit .* from $prefix/" "$work/cmake-configure.log" \
  || { cat "$work/cmake-configure.log"; fail "find_package did not find the installed copy"; }
"$cmake" --build "$work/cmake" -j2 > "$work/cmake-build.log" || { cat "$work/cmake-build.log"; fail "consumer build"; }
"$work/cmake/consumer" || fail "consumer (find_package)"
"$work/cmake/quickstart" > "$work/quickstart.out" || fail "README example (find_package)"
grep -q "^row 3: 1.5$" "$work/quickstart.out" || { cat "$work/quickstart.out"; fail "README example output"; }

step "consumer with pkg-config"
if ! command -v pkg-config > /dev/null; then
  echo "install_test: pkg-config not found, its half skipped (scripts/setup.sh installs it)"
  exit 77
fi
export PKG_CONFIG_PATH="$(dirname "$pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
version=$(pkg-config --modversion attnkit)
libdir=$(pkg-config --variable=libdir attnkit)
[ "$libdir" = "$(dirname "$(dirname "$pc")")" ] || fail "attnkit.pc libdir $libdir, installed in $(dirname "$pc")"
# shellcheck disable=SC2046  # pkg-config's output is a list of words
"$cxx" -std=c++20 -O1 -DEXPECTED_VERSION="\"$version\"" $(pkg-config --cflags attnkit) \
  -c "$consumer/consumer.cpp" -o "$work/consumer-pc.o"
# The plain form and --static must both link, whether libattnkit is static or shared.
for mode in "" --static; do
  # shellcheck disable=SC2046,SC2086
  "$cxx" "$work/consumer-pc.o" $(pkg-config --libs $mode attnkit) -Wl,-rpath,"$libdir" -o "$work/consumer-pc" \
    || fail "link with pkg-config --libs $mode attnkit: $(pkg-config --libs $mode attnkit)"
  "$work/consumer-pc" || fail "consumer (pkg-config --libs $mode)"
done
echo "install_test: installed package works with find_package and pkg-config"
