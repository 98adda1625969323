#!/usr/bin/env bash
# Prepares what a session carries to the GPU machine (device tool `run`, carry limit 64 MiB in
# all): the built einjit binary and the GPU test programs (CUDA backend, op kernels and device
# layers, device GPT), plus the shared libraries
# they need that the GPU image (CUDA 13, NVRTC, PyTorch; no MLIR, no network) lacks, as the
# Debian packages that hold them: libMLIR/libLLVM uncompressed exceed the limit, the .debs are
# about a fifth of that. Every package of the programs' ldd closure is carried except the base
# libraries any Linux image with a C++ toolchain and PyTorch has (BASE_PACKAGES below: with them
# all the bundle is about 70 MiB, over the limit). glibc (libc6) is carried for the case where
# the image's glibc is older than this machine's (libLLVM needs GLIBC_2.36).
#
#   scripts/gpu_bundle.sh [BUILD_DIR] [BUNDLE_DIR]     (defaults: build-cuda, .gpu-bundle)
#   GPU_BUNDLE_EXTRA="libxml2 libicu72" scripts/gpu_bundle.sh   also carries these packages
#
# BUNDLE_DIR must be git-ignored (it must not travel as part of the working tree, only as a
# carried path). On the device: `BUNDLE_DIR/run.sh PROGRAM ARGS...` (or BUNDLE_DIR/einjit ARGS...) unpacks the packages into
# /tmp/einjit-libs once and runs PROGRAM (a bundled name such as einjit, or a path) with only
# those libraries added; glibc comes from the bundle too when the image's is older than the
# build machine's.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build-cuda}
bundle=${2:-.gpu-bundle}
limit=$((64 * 1024 * 1024))
cd "$repo"

programs=("$build/tools/einjit" "$build/tests/compiler/cuda/einjit_cuda_backend_tests"
          "$build/tests/runtime/cuda/einjit_runtime_cuda_gpu_tests" "$build/tests/models/test_device_gpt_gpu")
BASE_PACKAGES=" libicu72 libxml2 zlib1g libstdc++6 libgcc-s1 liblzma5 libzstd1 libtinfo6 libffi8 "
for program in "${programs[@]}"; do
  [[ -x $program ]] || { echo "gpu_bundle: $program is missing; build it first (ninja -C $build ...)" >&2; exit 1; }
done
if ! git check-ignore -q "$bundle/"; then
  echo "gpu_bundle: $bundle is not git-ignored; add the line '/$bundle/' to .gitignore" >&2
  exit 1
fi

# Packages of every library the programs load, glibc's own libraries apart (packaged separately
# below, used only where the image's glibc is too old).
packages=()
while read -r library; do
  real=$(readlink -f "$library")
  package=""
  # Debian's merged /usr: dpkg may know a file under /lib or under /usr/lib.
  for candidate in "$real" "${real#/usr}" "/usr$real" "$library"; do
    package=$(dpkg -S "$candidate" 2>/dev/null | cut -d: -f1 | tr ',' '\n' | sed 's/^ *//' | grep -v -- '-dev$' | head -1 || true)
    [[ -n $package ]] && break
  done
  [[ -n $package ]] || { echo "gpu_bundle: no Debian package holds $real" >&2; exit 1; }
  [[ $BASE_PACKAGES == *" $package "* ]] || packages+=("$package")
done < <(ldd "${programs[@]}" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' |
         grep -Ev '/(libc|libm|libdl|librt|libpthread|ld-linux-x86-64)\.so' | sort -u)
mapfile -t packages < <(printf '%s\n' "${packages[@]}" ${GPU_BUNDLE_EXTRA:-} | sort -u)

rm -rf "$bundle"
mkdir -p "$bundle/debs" "$bundle/glibc" "$bundle/bin"
cp "${programs[@]}" "$bundle/bin/"
strip --strip-unneeded "$bundle"/bin/*  # their symbol tables are a few MiB of the carry limit
(cd "$bundle/debs" && apt-get download "${packages[@]}" >/dev/null 2>&1) ||
  { echo "gpu_bundle: apt-get download ${packages[*]} failed" >&2; exit 1; }
(cd "$bundle/glibc" && apt-get download libc6 >/dev/null 2>&1) ||
  { echo "gpu_bundle: apt-get download libc6 failed" >&2; exit 1; }
glibc_version=$(ldd --version | head -1 | awk '{print $NF}')

cat >"$bundle/run.sh" <<EOF
#!/usr/bin/env bash
# Runs a bundled program (or any program) with the bundle's libraries; see scripts/gpu_bundle.sh.
set -euo pipefail
here=\$(cd "\$(dirname "\$0")" && pwd)
libs=/tmp/einjit-libs
if [[ ! -e \$libs/.unpacked ]]; then
  rm -rf "\$libs" && mkdir -p "\$libs/root" "\$libs/glibc"
  for deb in "\$here"/debs/*.deb; do dpkg -x "\$deb" "\$libs/root"; done
  for deb in "\$here"/glibc/*.deb; do dpkg -x "\$deb" "\$libs/glibc"; done
  touch "\$libs/.unpacked"
fi
path=\$libs/root/usr/lib/x86_64-linux-gnu:\$libs/root/lib/x86_64-linux-gnu:\$libs/root/usr/lib/llvm-19/lib:\$libs/root/usr/lib/x86_64-linux-gnu/openblas-pthread
program=\$1
shift
[[ -x \$program ]] || program=\$here/bin/\$program
missing=\$(LD_LIBRARY_PATH=\$path ldd "\$program" 2>&1 | grep '=> not found' || true)
if [[ -n \$missing ]]; then
  echo "run.sh: this image lacks libraries the bundle does not carry:" >&2
  echo "\$missing" >&2
  echo "run.sh: rebuild the bundle with GPU_BUNDLE_EXTRA naming their Debian packages" >&2
  exit 1
fi
built_with=$glibc_version
have=\$(ldd --version 2>/dev/null | head -1 | awk '{print \$NF}')
if [[ -n \$have ]] && [[ \$(printf '%s\n' "\$built_with" "\$have" | sort -V | head -1) == "\$built_with" ]]; then
  LD_LIBRARY_PATH=\$path\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec "\$program" "\$@"
fi
# The image's glibc is older than the build machine's: run with the bundle's loader and libc.
glibc=\$libs/glibc/lib/x86_64-linux-gnu
exec "\$glibc/ld-linux-x86-64.so.2" --library-path "\$path:\$glibc\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" "\$program" "\$@"
EOF
chmod +x "$bundle/run.sh"
# `BUNDLE_DIR/einjit ARGS...`: the CLI with the bundle's libraries (for bench/gpu_bench.py --einjit).
printf '#!/usr/bin/env bash\nexec "$(dirname "$0")/run.sh" einjit "$@"\n' >"$bundle/einjit"
chmod +x "$bundle/einjit"

total=$(du -sb "$bundle" | cut -f1)
echo "gpu_bundle: $bundle: ${#programs[@]} programs, ${#packages[@]} packages + libc6: $((total / 1024 / 1024)) MiB ($total bytes) of $((limit / 1024 / 1024)) MiB"
if ((total > limit)); then
  echo "gpu_bundle: over the 64 MiB carry limit" >&2
  exit 1
fi
