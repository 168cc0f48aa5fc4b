"""`nibble serve` against llama-server on the same file, threads and slots, in the same run.

    python benchmarks/bench_server.py [-m MODEL ...] [-t 2] [-np 8] [--clients 1,4,8,16] [-n 128]
    python benchmarks/bench_server.py --soak 300 [--soak-clients 32]

Both servers run at once (idle while the other is measured) and take turns, --rounds times per number of
clients; the table gives the means. For each server and number of concurrent clients, every client streams one completion of -n tokens
(end-of-generation tokens are banned with logit_bias so every stream has the same length) from its own
prompt; the table gives aggregate generated tokens/s (all tokens, as the streams' usage counts them / wall
time from the first request to the last token) and time to first token p50/p95 (to the first chunk: both
servers send one per token, with empty text while a character split across tokens is incomplete). llama-server comes from benchmarks/build_llama_cpp.sh (the
llama.cpp that llama-cpp-python 0.3.36 vendors, built for this CPU's family as bench_cpu_paths.py does; ~8 minutes the first time).
--soak runs nibble alone: SOAK-CLIENTS clients streaming back to back for SOAK seconds; it reports failed
requests and the server's RSS after warm-up and at the end.
"""
import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from bench_cpu_paths import LLAMA_FLAVOR

from cpu_kernels import isa
from runtime import resolve_model
from runtime.tokenizer import Tokenizer
from gguf_io import open_gguf

HERE = Path(__file__).parent
TOPICS = ["the sea", "a small town", "winter", "a robot", "the moon", "bread", "a library", "trains", "a garden",
          "music", "the desert", "a lighthouse", "bees", "a storm", "mountains", "a market"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompt(i):
    return (f"Here is a long story about {TOPICS[i % len(TOPICS)]}, told by a patient narrator who likes "
            f"details (version {i}). Chapter one.\n\n")


def banned_tokens(model):
    gguf = open_gguf(model)
    try:
        return sorted(Tokenizer(gguf.metadata).eog_ids)
    finally:
        gguf.close()


def start(kind, model, threads, slots, ctx, port):
    if kind == "nibble":
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
        command = [sys.executable, "-m", "tools.cli", "serve", "-m", str(model), "-t", str(threads),
                   "-np", str(slots), "-c", str(ctx), "--port", str(port), "--queue", "256"]
        return subprocess.Popen(command, cwd=HERE.parent, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    flavor = LLAMA_FLAVOR[isa.KERNEL_PATH.name]
    out = subprocess.run([str(HERE / "build_llama_cpp.sh"), flavor], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"bench_server: building llama.cpp failed:\n{out.stderr[-2000:]}")
    binary = Path(out.stdout.strip().splitlines()[-1]) / "llama-server"
    command = [str(binary), "-m", str(model), "-t", str(threads), "-np", str(slots), "-c", str(ctx),
               "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop(process):
    """SIGTERM, then SIGKILL: llama-server sometimes sat in its shutdown for minutes."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_ready(process, port, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"bench_server: the server exited:\n{process.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit("bench_server: the server did not become ready")


async def stream_one(client, port, i, n_tokens, banned, seed):
    body = {"prompt": prompt(i), "max_tokens": n_tokens, "stream": True, "temperature": 0.8, "seed": seed + i,
            "logit_bias": {str(t): -100 for t in banned}, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first, count = None, 0
    async with client.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk.get("choices"):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                count = chunk["usage"]["completion_tokens"]
    return first, time.perf_counter(), count


async def run_clients(port, n_clients, n_tokens, banned, seed):
    limits = httpx.Limits(max_connections=n_clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(stream_one(client, port, i, n_tokens, banned, seed)
                                         for i in range(n_clients)))
    ttfts = sorted(r[0] for r in results)
    tokens = sum(r[2] for r in results)
    wall = max(r[1] for r in results) - started
    return dict(tps=tokens / wall, tokens=tokens, ttft_p50=statistics.median(ttfts),
                ttft_p95=ttfts[min(len(ttfts) - 1, int(round(0.95 * (len(ttfts) - 1))))])


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def soak(port, seconds, n_clients, n_tokens, banned, pid):
    failures, done, samples = [], 0, []
    deadline = time.perf_counter() + seconds

    async def worker(client, i):
        nonlocal done
        k = 0
        while time.perf_counter() < deadline:
            try:
                await stream_one(client, port, i * 1000 + k, n_tokens, banned, 0)
                done += 1
            except Exception as error:   # counted, not fatal: the soak reports every failure
                failures.append(repr(error))
            k += 1

    async def sampler():
        while time.perf_counter() < deadline:
            samples.append((time.perf_counter(), rss_mb(pid)))
            await asyncio.sleep(5)

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=n_clients + 4)) as client:
        await asyncio.gather(sampler(), *(worker(client, i) for i in range(n_clients)))
    return done, failures, samples


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", action="append",
                        help="model name or path, repeatable (default: smollm2-135m-instruct and the 1B-shaped "
                             "Q4_K_M if make_shaped_model.py has made it)")
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-np", "--parallel", type=int, default=8, help="slots of both servers (default: 8)")
    parser.add_argument("--clients", default="1,4,8,16")
    parser.add_argument("-n", "--n-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="runs per server and client count (mean)")
    parser.add_argument("--ctx-per-slot", type=int, default=512)
    parser.add_argument("--servers", default="nibble,llama-server")
    parser.add_argument("--soak", type=int, default=0, help="seconds of soak test (nibble only)")
    parser.add_argument("--soak-clients", type=int, default=32)
    args = parser.parse_args()
    shaped = Path.home() / ".cache/nibble/shaped/llama-3.2-1b-q4_k_m.gguf"
    models = [resolve_model(m) for m in (args.model or ["smollm2-135m-instruct"] +
                                         ([str(shaped)] if shaped.exists() else []))]
    clients = [int(c) for c in args.clients.split(",")]
    servers = args.servers.split(",")
    ctx = args.ctx_per_slot * args.parallel
    print(f"# bench_server {time.strftime('%Y-%m-%d %H:%M')}: {args.threads} threads, {args.parallel} slots, "
          f"{args.n_tokens} tokens per stream")
    for model in models:
        banned = banned_tokens(model)
        if args.soak:
            port = free_port()
            process = start("nibble", model, args.threads, args.parallel, ctx, port)
            try:
                wait_ready(process, port)
                asyncio.run(run_clients(port, args.parallel, 16, banned, 0))      # warm up
                done, failures, samples = asyncio.run(soak(port, args.soak, args.soak_clients, args.n_tokens,
                                                           banned, process.pid))
            finally:
                stop(process)
            warm = [mb for t, mb in samples if t - samples[0][0] >= 30] or [samples[-1][1]]
            print(f"soak {model.name}: {args.soak} s, {args.soak_clients} clients: {done} requests, "
                  f"{len(failures)} failed; RSS after warm-up {warm[0]:.0f} MB, max {max(warm):.0f} MB, "
                  f"end {warm[-1]:.0f} MB")
            series = [(round(t - samples[0][0]), round(mb)) for t, mb in samples[::6]]
            print(f"  RSS (s, MB) every 30 s: {series}")
            for failure in failures[:5]:
                print("  ", failure)
            continue
        ports = {kind: free_port() for kind in servers}
        processes = {kind: start(kind, model, args.threads, args.parallel, ctx, ports[kind]) for kind in servers}
        runs = {}
        try:
            for kind in servers:
                wait_ready(processes[kind], ports[kind])
                asyncio.run(run_clients(ports[kind], 2, 8, banned, 0))      # warm up (and compile, for nibble)
            for n in clients:              # the servers take turns, so a change in the machine's speed hits both
                for _ in range(args.rounds):
                    for kind in servers:
                        r = asyncio.run(run_clients(ports[kind], n, args.n_tokens, banned, 1))
                        runs.setdefault((kind, n), []).append(r)
                        print(f"  {kind:12s} {n:3d} clients: {r['tps']:7.1f} tok/s  ttft p50 {r['ttft_p50']:.2f} s "
                              f"p95 {r['ttft_p95']:.2f} s", file=sys.stderr, flush=True)
        finally:
            for process in processes.values():
                stop(process)
        results = {key: {field: statistics.mean(r[field] for r in rs) for field in rs[0]} for key, rs in runs.items()}
        print(f"\n{model.name}\n")
        print("| clients | " + " | ".join(f"{k} tok/s | {k} TTFT p50 / p95 (s)" for k in servers) +
              (" | nibble / llama-server tok/s |" if len(servers) == 2 else " |"))
        print("|---" * (1 + 2 * len(servers) + (len(servers) == 2)) + "|")
        for n in clients:
            cells = [f"{results[k, n]['tps']:.1f} | {results[k, n]['ttft_p50']:.2f} / {results[k, n]['ttft_p95']:.2f}"
                     for k in servers]
            ratio = (f" | {results[servers[0], n]['tps'] / results[servers[1], n]['tps']:.2f}x"
                     if len(servers) == 2 else "")
            print(f"| {n} | " + " | ".join(cells) + ratio + " |")


if __name__ == "__main__":
    main()
