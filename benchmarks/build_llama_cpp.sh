#!/usr/bin/env bash
# Build llama.cpp's command-line tools (llama-bench, llama-server, llama-quantize, llama-perplexity,
# llama-imatrix) from the llama.cpp that llama-cpp-python's source package vendors: the reference the
# benchmarks measure against. Nothing here is a dependency of nibble.
#
#   benchmarks/build_llama_cpp.sh [native|avx2|avx512bw] [VERSION]
#
# native:   -DGGML_NATIVE=ON (every instruction this CPU has)
# avx2:     what an AVX2-only laptop or desktop runs (AVX, AVX2, FMA, F16C; no AVX-512, no AVX-VNNI),
#           runnable on any newer x86 CPU: the reference for nibble's AVX2 path
# avx512bw: AVX-512 F/BW/DQ/VL without VNNI (Skylake-X): the reference for nibble's AVX-512BW path
#
# Binaries land in ${NIBBLE_CACHE:-~/.cache/nibble}/llama.cpp-VERSION-FLAVOR/bin. About 5-10 minutes
# on 2 cores.
set -euo pipefail
flavor=${1:-native}
version=${2:-0.3.36}
cache=${NIBBLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nibble}
out=$cache/llama.cpp-$version-$flavor
case $flavor in
  native)   flags=(-DGGML_NATIVE=ON) ;;
  avx2)     flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
                   -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF
                   -DGGML_AVX512_BF16=OFF) ;;
  avx512bw) flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
                   -DGGML_AVX_VNNI=OFF -DGGML_AVX512=ON -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF
                   -DGGML_AVX512_BF16=OFF) ;;
  *) echo "build_llama_cpp.sh: unknown flavor '$flavor' (native, avx2 or avx512bw)" >&2; exit 2 ;;
esac
if [ -x "$out/bin/llama-bench" ]; then echo "$out/bin"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work"
tar xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
source_dir=$work/llama_cpp_python-$version/vendor/llama.cpp
cmake -S "$source_dir" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DGGML_OPENMP=ON "${flags[@]}" >&2
cmake --build "$work/build" -j "$(nproc)" --target llama-bench llama-server llama-quantize llama-perplexity \
      llama-imatrix >&2
mkdir -p "$out.partial/bin"
cp "$work"/build/bin/llama-{bench,server,quantize,perplexity,imatrix} "$out.partial/bin/"
rm -rf "$out" && mv "$out.partial" "$out"
echo "$out/bin"
