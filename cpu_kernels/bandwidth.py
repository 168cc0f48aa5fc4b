"""This machine's memory read bandwidth, the ceiling a matvec kernel streaming weights can reach."""
import time

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True, fastmath=True)
def _parallel_sum(a):
    total = 0.0
    for i in prange(a.size):
        total += a[i]
    return total


def read_bandwidth(n_bytes=1 << 30, repeats=5):
    """GB/s of a parallel float32 sum over a fresh array far larger than the caches (best of `repeats`)."""
    a = np.ones(n_bytes // 4, np.float32)
    _parallel_sum(a)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        _parallel_sum(a)
        best = min(best, time.perf_counter() - start)
    return a.nbytes / best / 1e9
