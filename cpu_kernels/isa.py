"""Which instructions the integer tile kernels use: one path per CPU family, chosen once at import.

Every path reads the same tiles and the same 15-bit activations and adds the same exact integer products, so
all of them give the same bits (tile_dot.py); they differ only in the instructions that multiply bytes:

    avx512vnni  VPDPBUSD on 64 bytes (Ice Lake and later Xeons, Zen 4/5)
    avx512bw    VPMADDUBSW + VPMADDWD on 64 bytes (Skylake-X, Cascade Lake without VNNI)
    avxvnni     VEX VPDPBUSD on 32 bytes (Alder Lake and later cores, Zen 5 without AVX-512)
    avx2        VPMADDUBSW + VPMADDWD on 32 bytes (Haswell to Zen 3: most laptops and desktops)
    neon-dot    SDOT on 16 bytes (ARMv8.2+: Apple M, Graviton 2+, Snapdragon, Raspberry Pi 5)
    neon        widening multiplies on 16 bytes (older ARM64)
    float       no tiles: the float kernels of matvec.py (any other CPU)

The first path whose features the host has is taken. NIBBLE_KERNELS=<path> picks one by name (a path the CPU
cannot run is refused in one line). Picking a smaller path than the host's also makes Numba compile everything
for that path's CPU (its `cpu`), so that an AVX-512 machine runs what an AVX2 laptop would: that takes effect
when cpu_kernels is imported before anything else compiles with Numba; NUMBA_CPU_NAME (with NUMBA_CPU_FEATURES
set empty) does it regardless of order.
"""
import functools
import os
import platform
import warnings
from dataclasses import dataclass

import llvmlite.binding as llvm
import numba
from numba.core.registry import cpu_target

ENV = "NIBBLE_KERNELS"


@dataclass(frozen=True)
class KernelPath:
    name: str
    machine: str            # platform.machine() family: x86_64 or aarch64
    features: tuple         # LLVM feature names the host must have
    dot: str                # how tile_dot.py multiplies bytes: vpdpbusd, maddubs, sdot, widen, or None (float)
    vector_bytes: int = 64  # bytes per register of that instruction
    cpu: str = ""           # an LLVM CPU with exactly these features, for compiling as that CPU would
    describe: str = ""


PATHS = {path.name: path for path in (
    KernelPath("avx512vnni", "x86_64", ("avx512f", "avx512bw", "avx512vnni"), "vpdpbusd", 64, "icelake-server",
               "AVX-512 VNNI (VPDPBUSD, 64 bytes)"),
    KernelPath("avx512bw", "x86_64", ("avx512f", "avx512bw"), "maddubs", 64, "skylake-avx512",
               "AVX-512BW (VPMADDUBSW + VPMADDWD, 64 bytes)"),
    KernelPath("avxvnni", "x86_64", ("avx2", "fma", "f16c", "avxvnni"), "vpdpbusd", 32, "alderlake",
               "AVX-VNNI (VEX VPDPBUSD, 32 bytes)"),
    KernelPath("avx2", "x86_64", ("avx2", "fma", "f16c"), "maddubs", 32, "haswell",
               "AVX2 (VPMADDUBSW + VPMADDWD, 32 bytes)"),
    KernelPath("neon-dot", "aarch64", ("neon", "dotprod"), "sdot", 16, "neoverse-n1", "ARM64 NEON with SDOT"),
    KernelPath("neon", "aarch64", ("neon",), "widen", 16, "cortex-a72", "ARM64 NEON (widening multiplies)"),
    KernelPath("float", "", (), None, 0, "", "float kernels (no integer tiles)"),
)}


def _machine():
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


AARCH64_HWCAPS = {"neon": 1 << 1, "dotprod": 1 << 20}     # Linux AT_HWCAP bits: ASIMD, ASIMDDP


@functools.lru_cache(maxsize=None)
def host_features():
    """LLVM's names for the host's features; on ARM64 Linux also the kernel's hardware capabilities (LLVM reads
    /proc/cpuinfo, which qemu-user does not emulate; getauxval is what the CPU, or qemu, reports)."""
    features = frozenset(name for name, on in llvm.get_host_cpu_features().items() if on)
    if _machine() == "aarch64" and platform.system() == "Linux":
        import ctypes
        libc = ctypes.CDLL(None)
        libc.getauxval.restype = ctypes.c_ulong
        hwcap = libc.getauxval(16)     # AT_HWCAP
        features |= {name for name, bit in AARCH64_HWCAPS.items() if hwcap & bit}
    return features


def runs_here(path: KernelPath, machine=None, features=None):
    """Whether a CPU of this machine family with these LLVM features can run the path."""
    machine = machine or _machine()
    features = host_features() if features is None else features
    if path.machine and path.machine != machine:
        return False
    if machine == "aarch64" and "neon" in path.features:
        features = features | {"neon"}       # LLVM names it only on some builds; every ARM64 CPU has it
    return all(feature in features for feature in path.features)


def choose(requested=None):
    """The path for this host, or the one NIBBLE_KERNELS names (ValueError with one line if it cannot run)."""
    requested = os.environ.get(ENV, "") if requested is None else requested
    if requested:
        path = PATHS.get(requested.strip().lower())
        if path is None:
            raise ValueError(f"{ENV}={requested!r} is not a kernel path; choose one of {', '.join(PATHS)}")
        if not runs_here(path):
            raise ValueError(f"{ENV}={requested}: this CPU cannot run {path.describe}; "
                             f"it runs: {', '.join(p.name for p in PATHS.values() if runs_here(p))}")
        return path
    return next(path for path in PATHS.values() if runs_here(path))


def emulation_env(name):
    """Environment variables that run a path as its own CPU would, whatever this one has (tests, benchmarks)."""
    path = PATHS[name]
    env = {ENV: name}
    if path.cpu:
        env.update(NUMBA_CPU_NAME=path.cpu, NUMBA_CPU_FEATURES="")
    return env


def _compile_for(path: KernelPath):
    """Make Numba compile for the path's CPU when the path was asked for below the host's best."""
    if not path.cpu or os.environ.get("NUMBA_CPU_NAME") or path == choose(""):
        return
    if "_toplevel_target_context" in cpu_target.__dict__:
        warnings.warn(f"{ENV}={path.name}: Numba was set up for this CPU before cpu_kernels was imported; the tile "
                      f"kernels use {path.name} instructions, the rest does not. NUMBA_CPU_NAME={path.cpu} "
                      f"NUMBA_CPU_FEATURES= emulate that CPU fully.", stacklevel=3)
        return
    os.environ.update(NUMBA_CPU_NAME=path.cpu, NUMBA_CPU_FEATURES="")   # also for Numba's later config reloads
    numba.config.CPU_NAME, numba.config.CPU_FEATURES = path.cpu, ""


KERNEL_PATH = choose()
_compile_for(KERNEL_PATH)
