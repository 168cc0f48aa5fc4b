"""Run the elementwise-chain ops (those compiled with ops.SAME_ORDER) on fixed random inputs and print one
digest per op, for test_kernels' fresh-compile test: a process that compiles the kernels must give the bits
of one that loads them. (The parallel reductions, rms_norm and the like, still differ between the two on
some emulated CPU targets, e.g. NUMBA_CPU_NAME=alderlake: not covered here until fixed.)"""
import hashlib

import numpy as np

from cpu_kernels import ops


def digests():
    rng = np.random.default_rng(7)

    def rows(n=3, d=1536, scale=3.0):
        return (rng.standard_normal((n, d)) * scale).astype(np.float32)

    out = {}
    x, delta, b = rows(), rows(), rows(1)[0]
    y = np.empty_like(x)
    ops.silu_mul(x, delta, y); out["silu_mul"] = y.copy()
    ops.gelu_tanh_mul(x, delta, y); out["gelu_tanh_mul"] = y.copy()
    r = x.copy(); ops.add_bias_gelu(r, b); out["add_bias_gelu"] = r
    return {name: hashlib.md5(np.ascontiguousarray(v).tobytes()).hexdigest() for name, v in out.items()}


if __name__ == "__main__":
    for name, digest in digests().items():
        print(name, digest)
