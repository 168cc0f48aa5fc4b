"""nibble on each kernel path this machine can run, next to llama.cpp built for the same CPU family, same run.

    python benchmarks/bench_cpu_paths.py [--paths avx2,avx512bw] [-t 2] [--rounds 2] [--quick]

A path below the host's best runs as its own CPU would: NIBBLE_KERNELS names it and Numba compiles for that
CPU (isa.emulation_env), and llama.cpp is the build benchmarks/build_llama_cpp.sh makes for that family (avx2:
AVX/AVX2/FMA/F16C only; avx512bw: AVX-512 without VNNI; the host's best: native), built on first use. Files:
SmolLM2-135M as packaged (Q4_1) and Llama-3.2-1B-shaped Q4_K_M, Q4_0 and Q8_0 (make_shaped_model.py). Each
round runs nibble's `bench` and llama-bench one after the other on a file (pp and tg, `-r` repetitions each);
the table gives the mean over rounds.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cpu_kernels import isa
from runtime import resolve_model
from runtime.registry import cache_dir

HERE = Path(__file__).parent
LLAMA_FLAVOR = {"avx2": "avx2", "avxvnni": "native", "avx512bw": "avx512bw", "avx512vnni": "native",
                "neon-dot": "native", "neon": "native", "float": "native"}


def llama_bench_binary(flavor):
    out = subprocess.run([str(HERE / "build_llama_cpp.sh"), flavor], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"bench_cpu_paths: building llama.cpp ({flavor}) failed:\n{out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1]) / "llama-bench"


def nibble_speeds(path_name, model, threads, n_prompt, n_gen, reps):
    env = {**os.environ, **isa.emulation_env(path_name)}
    env.pop("OPENBLAS_CORETYPE", None)
    command = [sys.executable, "-m", "tools.cli", "bench", "-m", str(model), "-t", str(threads), "-p", str(n_prompt),
               "-n", str(n_gen), "-r", str(reps), "--json"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=HERE.parent)
    if out.returncode:
        sys.exit(f"bench_cpu_paths: nibble bench failed on {path_name}:\n{out.stderr[-2000:]}")
    results = json.loads(out.stdout[out.stdout.index("{"):])["results"]
    return {r["test"][:2]: r["tokens_per_second"] for r in results}


def llama_speeds(binary, model, threads, n_prompt, n_gen, reps):
    command = [str(binary), "-m", str(model), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
               "-r", str(reps), "-o", "json"]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"bench_cpu_paths: llama-bench failed:\n{out.stderr[-2000:]}")
    return {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in json.loads(out.stdout)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runnable = [name for name, path in isa.PATHS.items() if isa.runs_here(path) and name != "float"]
    parser.add_argument("--paths", default=",".join(runnable), help="kernel paths (default: %(default)s)")
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-r", "--repetitions", type=int, default=2, help="runs per test per round (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="nibble/llama.cpp alternations per file (default 2)")
    parser.add_argument("--quick", action="store_true", help="pp128/tg32")
    parser.add_argument("--shaped-dir", type=Path, default=cache_dir() / "shaped")
    args = parser.parse_args()
    n_prompt, n_gen = (128, 32) if args.quick else (512, 128)
    sys.path.insert(0, str(HERE))
    from bench_end_to_end import shaped
    files = [("SmolLM2-135M Q4_1", resolve_model("smollm2-135m-instruct"))]
    files += [(f"Llama-3.2-1B-shaped {mix}", shaped(args.shaped_dir, "llama-3.2-1b", mix))
              for mix in ("Q4_K_M", "Q4_0", "Q8_0")]
    print(f"host: {isa.choose('').describe}\n")
    print("| path | file | pp nibble | llama.cpp | ratio | tg nibble | llama.cpp | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for path_name in args.paths.split(","):
        binary = llama_bench_binary(LLAMA_FLAVOR[path_name])
        for label, model in files:
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(nibble_speeds(path_name, model, args.threads, n_prompt, n_gen, args.repetitions))
                theirs.append(llama_speeds(binary, model, args.threads, n_prompt, n_gen, args.repetitions))
            mean = {engine: {test: sum(run[test] for run in runs) / len(runs) for test in ("pp", "tg")}
                    for engine, runs in (("nibble", ours), ("llama.cpp", theirs))}
            a, b = mean["nibble"], mean["llama.cpp"]
            print(f"| {path_name} | {label} | {a['pp']:.1f} | {b['pp']:.1f} | {a['pp'] / b['pp']:.2f} | "
                  f"{a['tg']:.1f} | {b['tg']:.1f} | {a['tg'] / b['tg']:.2f} |", flush=True)
    print(f"\n{time.strftime('%Y-%m-%d')}, {args.threads} threads, pp{n_prompt} / tg{n_gen} tokens/s; llama.cpp "
          f"built by benchmarks/build_llama_cpp.sh for each path's CPU family; ratios are nibble / llama.cpp.")


if __name__ == "__main__":
    main()
