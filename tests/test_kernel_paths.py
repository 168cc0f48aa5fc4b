"""Every kernel path (cpu_kernels/isa.py): the choice and its switch, the kernel and golden-logit tests on each
path this machine can run (in a fresh process with NIBBLE_KERNELS set, compiled as that path's CPU), and the
emitted instructions of every path, ARM64's included, compiled from the same IR for its own CPU."""
import os
import re
import subprocess
import sys
from pathlib import Path

import llvmlite.binding as llvm
import pytest
from llvmlite import ir
from numba import types
from numba.core.registry import cpu_target

from cpu_kernels import isa, tiles
from cpu_kernels.tile_dot import _tile_dot_emitter

TESTS = Path(__file__).parent


def test_host_path_is_the_best_it_runs():
    host = isa.choose("")
    assert isa.runs_here(host)
    better = list(isa.PATHS)[:list(isa.PATHS).index(host.name)]
    assert not any(isa.runs_here(isa.PATHS[name]) for name in better)


@pytest.mark.parametrize("machine, features, expected", [
    ("x86_64", {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vnni"}, "avx512vnni"),
    ("x86_64", {"avx2", "fma", "f16c", "avx512f", "avx512bw"}, "avx512bw"),
    ("x86_64", {"avx2", "fma", "f16c", "avxvnni"}, "avxvnni"),
    ("x86_64", {"avx2", "fma", "f16c"}, "avx2"),
    ("x86_64", {"avx", "sse4.2"}, "float"),
    ("aarch64", {"neon", "dotprod"}, "neon-dot"),
    ("aarch64", set(), "neon"),
    ("riscv64", {"v"}, "float"),
])
def test_path_for_each_cpu_family(machine, features, expected):
    assert next(p.name for p in isa.PATHS.values() if isa.runs_here(p, machine, features)) == expected


def test_switch_refuses_unknown_and_unrunnable_paths():
    with pytest.raises(ValueError, match="not a kernel path; choose one of avx512vnni"):
        isa.choose("sse9")
    cannot = [p for p in isa.PATHS.values() if not isa.runs_here(p)]
    assert cannot, "every path runs on this machine?"
    with pytest.raises(ValueError, match=f"this CPU cannot run .* it runs: .*{isa.choose('').name}"):
        isa.choose(cannot[0].name)
    assert isa.choose("FLOAT").name == "float"


def test_switch_reaches_a_new_process():
    env = {**os.environ, **isa.emulation_env("float")}
    code = "import cpu_kernels; from cpu_kernels import isa, tiles; print(isa.KERNEL_PATH.name, tiles.USE_TILES)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["float", "False"]
    bad = subprocess.run([sys.executable, "-c", "import cpu_kernels"], env={**os.environ, isa.ENV: "sse9"},
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "NIBBLE_KERNELS='sse9' is not a kernel path" in bad.stderr


OTHER_RUNNABLE = [name for name, path in isa.PATHS.items() if isa.runs_here(path) and name != isa.KERNEL_PATH.name]


@pytest.mark.parametrize("name", OTHER_RUNNABLE)
def test_kernels_and_golden_logits_on_path(name):
    """The host's own path runs these in the main test run; every other path it can run, here."""
    env = {**os.environ, **isa.emulation_env(name)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                             str(TESTS / "test_kernels.py"), str(TESTS / "test_fidelity.py")],
                            env=env, capture_output=True, text=True, cwd=TESTS.parent, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]


# ---------------------------------------------------------------- the instructions each path emits

def tile_dot_assembly(path_name, fmt_type, x_rows=1):
    """Assembly of one format's tile dot product on a path, compiled by LLVM for that path's CPU."""
    path = isa.PATHS[path_name]
    context = cpu_target.target_context
    arg_types = (types.Array(types.uint8, 3, "C"), types.intp, types.Array(types.int8, 4, "C"),
                 types.Array(types.float32, 2, "C"), types.Array(types.int32, 3, "C"), types.intp, types.intp,
                 types.Array(types.float32, 2, "C"), types.intp, types.intp, types.intp)
    module = ir.Module("tile_dot_check")
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), [context.get_value_type(t) for t in arg_types]),
                           "tile_dot_check")
    builder = ir.IRBuilder(function.append_basic_block())
    _tile_dot_emitter(tiles.TILED[fmt_type].format, path)(context, builder, arg_types, function.args, x_rows)
    builder.ret_void()
    triple = "aarch64-unknown-linux-gnu" if path.machine == "aarch64" else "x86_64-unknown-linux-gnu"
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    machine = llvm.Target.from_triple(triple).create_target_machine(cpu=path.cpu, features="", opt=3)
    parsed = llvm.parse_assembly(str(module))
    parsed.triple = triple
    return machine.emit_assembly(parsed)


EXPECTED = {     # path: instructions that must appear (regular expressions over the assembly), and ones that must not
    "avx512vnni": ((r"vpdpbusd\s.*%zmm",), ("vpmaddubsw",)),
    "avx512bw": ((r"vpmaddubsw\s.*%zmm", r"vpmaddwd\s.*%zmm"), ("vpdpbusd",)),
    "avxvnni": ((r"\{vex\}\s+vpdpbusd\s.*%ymm",), ("zmm",)),
    "avx2": ((r"vpmaddubsw\s.*%ymm", r"vpmaddwd\s.*%ymm"), ("zmm", "vpdpbusd")),
    "neon-dot": ((r"\ssdot\s+v",), ()),
    "neon": ((r"\s[su]mull2?\s",), ("sdot",)),
}


@pytest.mark.parametrize("fmt_type", [t for t in tiles.TILED if t.name in ("Q4_0", "Q8_0", "IQ4_XS", "Q6_K", "Q4_K")],
                         ids=lambda t: t.name)
@pytest.mark.parametrize("path_name", list(EXPECTED))
def test_each_path_emits_its_instructions(path_name, fmt_type):
    assembly = tile_dot_assembly(path_name, fmt_type)
    present, absent = EXPECTED[path_name]
    for instruction in present:
        assert re.search(instruction, assembly), f"{path_name} {fmt_type.name}: no {instruction!r}"
    for instruction in absent:
        assert instruction not in assembly, f"{path_name} {fmt_type.name}: {instruction!r}"
    if fmt_type.name in ("Q8_0", "IQ4_XS") and path_name in ("avx512bw", "avx2"):
        assert "vpmaddubsw" in assembly and ("vpsignb" in assembly or "vpsubb" in assembly)    # |code| x signed x
    if fmt_type.name == "IQ4_XS":
        lookup = {"neon-dot": "tbl\t", "neon": "tbl\t"}.get(path_name, "vpshufb")
        assert lookup in assembly
