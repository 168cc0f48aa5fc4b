#!/usr/bin/env bash
# The kernel tests on ARM64, under qemu-user: an arm64 Debian chroot (debootstrap) with Python from Debian
# and numpy/Numba/llvmlite from PyPI's aarch64 wheels, running tests/test_kernels.py on the path the
# emulated CPU gets (neon-dot: qemu's default CPU has the dot-product extension) and on `neon`.
#
#   sudo tests/arm64_emulation.sh [ROOT] [pytest args...]     (default ROOT: ~/.cache/nibble/arm64-root)
#
# Needs root (debootstrap, chroot, binfmt_misc) and Debian's qemu-user-static and debootstrap packages.
# Slow: Numba compiles every kernel under emulation. Not part of CI.
set -euo pipefail
root=${1:-${NIBBLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nibble}/arm64-root}
shift || true
repo=$(cd "$(dirname "$0")/.." && pwd)
command -v qemu-aarch64-static >/dev/null || { echo "arm64_emulation.sh: apt-get install qemu-user-static debootstrap" >&2; exit 2; }

# let the kernel run arm64 binaries through qemu (F: the interpreter is opened now, so it works in the chroot)
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  echo ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
    > /proc/sys/fs/binfmt_misc/register
fi

if [ ! -x "$root/opt/venv/bin/python" ]; then
  [ -x "$root.partial/usr/bin/python3" ] ||
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root.partial"
  [ -x "$root.partial/opt/venv/bin/pip" ] || chroot "$root.partial" python3 -m venv /opt/venv
  cp /etc/resolv.conf "$root.partial/etc/resolv.conf"
  # the host's CA bundle, for networks whose proxy re-signs TLS
  cp /etc/ssl/certs/ca-certificates.crt "$root.partial/etc/ssl/certs/ca-certificates.crt"
  chroot "$root.partial" env -i PATH=/usr/bin:/bin HOME=/root /opt/venv/bin/pip install --quiet \
    --cert /etc/ssl/certs/ca-certificates.crt --only-binary :all: numpy numba gguf sentencepiece jinja2 regex tqdm \
    threadpoolctl tokenizers pytest
  rm -rf "$root" && mv "$root.partial" "$root"
fi

mkdir -p "$root/nibble"
mountpoint -q "$root/nibble" || mount --bind "$repo" "$root/nibble"
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
trap 'umount "$root/nibble" "$root/proc" 2>/dev/null || true' EXIT
chroot "$root" env -i PYTHONPATH=/nibble HOME=/tmp NIBBLE_CACHE=/tmp/nibble-cache /opt/venv/bin/python -c "import platform, cpu_kernels; from cpu_kernels import isa; \
print(platform.machine(), isa.KERNEL_PATH.name, sorted(isa.host_features() & {'neon', 'dotprod'}))" 2>&1 \
  | sed 's/^/arm64: /'
# each path compiled for its own CPU (neoverse-n1, cortex-a72): LLVM reads the features from /proc/cpuinfo,
# which qemu-user does not emulate, so the host's would lack the dot-product extension
for path in neon-dot neon; do
  cpu=$(chroot "$root" env -i PYTHONPATH=/nibble /opt/venv/bin/python -c \
        "from cpu_kernels.isa import PATHS; print(PATHS['$path'].cpu)" 2>/dev/null | tail -1)
  chroot "$root" env -i PATH=/usr/bin:/bin NIBBLE_KERNELS=$path NUMBA_CPU_NAME=$cpu NUMBA_CPU_FEATURES= \
    NIBBLE_CACHE=/tmp/nibble-cache PYTHONPATH=/nibble HOME=/tmp \
    /opt/venv/bin/python -m pytest -q -p no:cacheprovider /nibble/tests/test_kernels.py -k "not real" "$@"
done
