#!/bin/sh
# Build the CUDA binaries HERE and pack them, with the shared libraries the
# GPU machine lacks, into .devcarry/gppdev.tar.xz for tests/gpu/device-run.sh
# (issue 8).  The GPU machine has the driver (libcuda.so.1), the CUDA 13
# toolkit and PyTorch, but not libopenblas, libcjson, libuv, libcmocka ...
#
#   tests/gpu/pack.sh            (from anywhere; BUILD=/tmp/b-gpu-release)
#
# - gppd too, for tests/gpu/e2e.py (gppd + a CUDA worker + a job over HTTP);
# - a release build with -Dcuda=enabled in $BUILD (outside the repo: only
#   the packed binaries travel, so the build path does not matter there);
# - the CUDA runtime is linked statically (libcudart_static.a); cuBLAS is
#   NOT packed (libcublas.so.13 + libcublasLt.so.13 are ~600 MB): the engine
#   dlopens the machine's (device-run.sh finds it under /usr/local/cuda or
#   the torch venv's nvidia/ packages and puts it on LD_LIBRARY_PATH);
# - every library ldd lists for the binaries except glibc's own (libc, libm,
#   libpthread, libdl, librt, ld-linux: the machine's glibc 2.39 is newer
#   than the 2.34 symbols they need) and the driver;
# - the Fashion-MNIST test files (t10k, 4.4 MB) for the lenet5 loss curve;
# - xz-compressed: the tree that travels must stay under 64 MiB.
# .devcarry/ is ignored through .git/info/exclude (the lead may add
# /.devcarry/ to .gitignore).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-/tmp/b-gpu-release}
cd "$root"
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Dcuda=enabled --buildtype=release
fi
bins="worker/gpp-worker daemon/gppd tests/gpu/test_cuda_layers tests/gpu/test_cuda_net tests/gpu/test_cuda_gpp tests/gpu/test_fakedev"
ninja -C "$build" -j"${JOBS:-2}" $bins
grep -q GPP_HAVE_CUDA.1 "$build/gpp_config.h" || { echo "pack: $build has no CUDA" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT INT TERM
mkdir -p "$stage/worker" "$stage/bin" "$stage/lib" "$stage/data/fashion-mnist"
for b in $bins; do
    cp "$build/$b" "$stage/bin/"
    strip -g "$stage/bin/$(basename "$b")"
done
ln -s ../bin/gpp-worker "$stage/worker/gpp-worker"   # engine_vs_torch.sh's layout
for b in $bins; do ldd "$build/$b"; done | awk '/=> \// {print $1, $3}' | sort -u |
while read -r name path; do
    case $name in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcuda.so*) continue ;;
    esac
    cp -L "$path" "$stage/lib/$name"
done
fm=${FMNIST:-/usr/share/datasets/fashion-mnist}
cp "$fm/t10k-images-idx3-ubyte.gz" "$fm/t10k-labels-idx1-ubyte.gz" "$stage/data/fashion-mnist/"
git rev-parse HEAD > "$stage/COMMIT" 2>/dev/null || true
git status --short > "$stage/STATUS" 2>/dev/null || true
mkdir -p .devcarry
tar -cJf .devcarry/gppdev.tar.xz -C "$stage" .
grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || echo '/.devcarry/' >> .git/info/exclude
ls -la .devcarry/
echo "pack: libs: $(ls "$stage/lib" | tr '\n' ' ')"
echo "pack: the tree that travels (tracked + untracked-not-ignored + .devcarry):"
{ git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1; du -cb .devcarry | tail -1; } |
    awk '{s += $1} END {printf "pack: %.1f MiB (limit 64)\n", s / 1048576}'
