#!/usr/bin/env bash
# Builds the native module with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DSHARDSEAL_SANITIZE=address;undefined) into build/sanitize/ and runs the native tests under it:
# first the C++ core tests (cpp/tests, with LeakSanitizer on), then the Python native tests.
#
#   cpp/tools/sanitized_tests.sh [python] [extra pytest args]
#
# The instrumented module goes into a copy of the package in build/sanitize/pkg/, never into
# src/: the normal build stays as it is. Python itself is not instrumented, so libasan is
# preloaded (with libstdc++) and leak detection is off (CPython keeps objects alive at exit on purpose).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${1:-python3}
shift || true
BUILD=build/sanitize
PYBIND11_DIR=$("$PYTHON" -c "import pybind11; print(pybind11.get_cmake_dir())" 2>/dev/null ||
               python3 -c "import pybind11; print(pybind11.get_cmake_dir())")
cmake -S . -B "$BUILD" -DSKBUILD=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DSHARDSEAL_SANITIZE=address;undefined" -DSHARDSEAL_BUILD_TESTS=ON -Dpybind11_DIR="$PYBIND11_DIR" \
  -DPython_EXECUTABLE="$(command -v "$PYTHON")" >/dev/null
cmake --build "$BUILD" -j "$(nproc)" >/dev/null
# The C++ tests link the sanitizer runtime themselves; leaks count here (a throwing constructor).
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$BUILD/shardseal_core_tests"
rm -rf "$BUILD/pkg" && mkdir -p "$BUILD/pkg"
cp -r src/shardseal "$BUILD/pkg/" && rm -f "$BUILD"/pkg/shardseal/_native*.so
cp "$BUILD"/_native*.so "$BUILD/pkg/shardseal/"
# libstdc++ is preloaded too: the python binary does not link it, and ASan's __cxa_throw
# interceptor must find the real one when the module throws its first C++ exception.
LIBASAN=$(${CXX:-g++} -print-file-name=libasan.so)
LIBSTDCXX=$(${CXX:-g++} -print-file-name=libstdc++.so)
export LD_PRELOAD="$LIBASAN $LIBSTDCXX"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH="$PWD/$BUILD/pkg:$PWD"
export SHARDSEAL_REQUIRE_NATIVE=1
"$PYTHON" -c "import shardseal._native as n, sys; assert '$BUILD' in n.__file__, n.__file__; print('sanitized module:', n.__file__, '| kernels:', n.kernel_status())"
exec "$PYTHON" -m pytest -q -p no:cacheprovider tests/core/test_kernels.py tests/core/test_wycheproof.py \
  tests/core/test_interop.py tests/core/test_native_stub.py tests/core/test_native_hkdf.py \
  tests/io/test_random_read.py "$@"
