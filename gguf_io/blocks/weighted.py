"""Importance-weighted quantizers: llama.cpp's quantize_row_<type>_impl with quant_weights, as llama-quantize
--imatrix runs them, for the legacy and K formats (the grid and IQ4 types keep theirs in their own modules).

Each weight of a block counts as qw * sqrt(sigma2 + x^2): qw from the importance matrix (its column's mean
squared activation), sigma2 the mean square of the row (Q4_0, Q4_1, Q5_0, Q5_1), of the super-block (Q2_K) or
twice that (Q3_K, Q4_K, Q5_K); Q6_K weighs by qw alone. The searches are ggml's,
in float32 step for step (ggml-quants.c is compiled without FMA contraction, and so is this). The K types share
their block packers with kquants.py; only the searches differ.
"""
import numpy as np
from numba import njit, prange

from .bits import F32, fp16_to_fp32, fp32_to_fp16, nearest_int, put_u16, signed_absmax
from .kquants import (pack_q3_k, pack_q4_k, pack_q5_k, pack_q6_k, put_q3_scales, put_scale_min_k4,
                      requantize_scale_min)

GROUP_MAX_EPS = F32(1e-15)


@njit(cache=True, inline="always")
def sum_squares(x):
    """sum x^2 in float32, in order (ggml's sumx2 / sum_x2)."""
    total = F32(0.0)
    for v in x:
        total += v * v
    return total


@njit(cache=True, inline="always")
def sum_of(x):
    """sum x in float32, in order (ggml's sumw)."""
    total = F32(0.0)
    for v in x:
        total += v
    return total


@njit(cache=True, inline="always")
def importance_weights(x, qw, sigma2, w):
    """llama.cpp's weight of each element under an importance matrix: qw * sqrt(sigma2 + x^2)."""
    for i in range(x.size):
        w[i] = qw[i] * np.sqrt(sigma2 + x[i] * x[i])


@njit(cache=True, inline="always")
def make_qp_quants(n, nmax, x, L, w):
    """ggml's make_qp_quants: a positive scale and levels 0..nmax for x >= 0 minimizing sum w (x - s l)^2.
    L is uint8, as in ggml: a negative x (IQ2's sign-parity flip makes one) gives level -1 stored as 255,
    and that 255 takes part in the search as ggml's does."""
    vmax = F32(0.0)
    for i in range(n):
        vmax = max(vmax, x[i])
    if vmax < F32(1e-15):
        L[:n] = 0
        return F32(0.0)
    iscale = F32(nmax) / vmax
    for i in range(n):
        L[i] = nearest_int(iscale * x[i])
    scale = F32(1.0) / iscale
    best_mse = F32(0.0)
    for i in range(n):
        diff = x[i] - scale * F32(L[i])
        best_mse += w[i] * diff * diff
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = (F32(0.1) * F32(step) + F32(nmax)) / vmax
        scale_is = F32(1.0) / iscale_is
        mse = F32(0.0)
        for i in range(n):
            l = min(nmax, nearest_int(iscale_is * x[i]))
            diff = x[i] - scale_is * F32(l)
            mse += w[i] * diff * diff
        if mse < best_mse:
            best_mse, iscale = mse, iscale_is
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = min(nmax, nearest_int(iscale * x[i]))
        L[i] = l
        sumlx += w[i] * x[i] * F32(l)
        suml2 += w[i] * F32(l) * F32(l)
    for _ in range(5):
        changed = 0
        for i in range(n):
            slx = sumlx - w[i] * x[i] * F32(L[i])
            sl2 = suml2 - w[i] * F32(L[i]) * F32(L[i])
            if slx > 0 and sl2 > 0:
                new_l = min(nmax, nearest_int(x[i] * sl2 / slx))
                if new_l != L[i]:
                    slx += w[i] * x[i] * F32(new_l)
                    sl2 += w[i] * F32(new_l) * F32(new_l)
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i], sumlx, suml2 = new_l, slx, sl2
                        changed += 1
        if not changed:
            break
    return sumlx / suml2 if suml2 > 0 else F32(0.0)


@njit(cache=True, inline="always")
def make_qx_quants_weighted(n, nmax, x, L, w):
    """ggml's make_qx_quants with quant weights (rmse_type 1): a signed scale and levels 0..2 nmax - 1."""
    amax, vmax = signed_absmax(x[:n])
    if amax < GROUP_MAX_EPS:
        L[:n] = 0
        return F32(0.0)
    iscale = F32(-nmax) / vmax
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
        L[i] = l + nmax
        sumlx += w[i] * x[i] * F32(l)
        suml2 += w[i] * F32(l) * F32(l)
    scale = sumlx / suml2 if suml2 != 0 else F32(0.0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(F32(nmax) + F32(0.1) * F32(step)) / vmax
        sumlx = F32(0.0)
        suml2 = F32(0.0)
        for i in range(n):
            l = max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
            sumlx += w[i] * x[i] * F32(l)
            suml2 += w[i] * F32(l) * F32(l)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(cache=True, inline="always")
def make_qkx3_quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep):
    """ggml's make_qkx3_quants with weights, squared error (use_mad false): (scale, -min), levels 0..nmax."""
    vmin = x[0]
    vmax = x[0]
    sum_w = weights[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < vmin:
            vmin = x[i]
        if x[i] > vmax:
            vmax = x[i]
        sum_w += weights[i]
        sum_x += weights[i] * x[i]
    if vmin > 0:
        vmin = F32(0.0)
    if vmax <= vmin:
        L[:n] = 0
        return F32(0.0), -vmin
    iscale = F32(nmax) / (vmax - vmin)
    scale = F32(1.0) / iscale
    best_mad = F32(0.0)
    for i in range(n):
        L[i] = max(0, min(nmax, nearest_int(iscale * (x[i] - vmin))))
        diff = scale * F32(L[i]) + vmin - x[i]
        best_mad += weights[i] * (diff * diff)
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * F32(step) + F32(nmax)) / (vmax - vmin)
        sum_l = F32(0.0)
        sum_l2 = F32(0.0)
        sum_xl = F32(0.0)
        for i in range(n):
            l = max(0, min(nmax, nearest_int(iscale * (x[i] - vmin))))
            Laux[i] = l
            sum_l += weights[i] * F32(l)
            sum_l2 += weights[i] * F32(l) * F32(l)
            sum_xl += weights[i] * F32(l) * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0:
                this_min = F32(0.0)
                this_scale = sum_xl / sum_l2
            mad = F32(0.0)
            for i in range(n):
                diff = this_scale * F32(Laux[i]) + this_min - x[i]
                mad += weights[i] * (diff * diff)
            if mad < best_mad:
                L[:n] = Laux[:n]
                best_mad = mad
                scale = this_scale
                vmin = this_min
    return scale, -vmin


@njit(cache=True, parallel=True)
def _quantize_legacy(x, out, qw, nmax, with_min):
    """quantize_row_q4_0/q5_0_impl (make_qx_quants, signed levels; nmax 8 or 16) and q4_1/q5_1_impl
    (make_qkx3_quants, scale and min; nmax 15 or 31): sigma2 over the whole row; a fifth bit goes to qh."""
    n_per_row = qw.size
    five_bits = nmax > 15
    qh_at = 4 if with_min else 2
    qs_at = qh_at + (4 if five_bits else 0)
    block_bytes = qs_at + 16
    for r in prange(x.size // n_per_row):
        row = x[r * n_per_row:(r + 1) * n_per_row]
        L = np.zeros(32, np.int32)
        Laux = np.zeros(32, np.int32)
        weight = np.empty(32, np.float32)
        sigma2 = sum_squares(row) / F32(n_per_row)
        for ib in range(n_per_row // 32):
            xb = row[32 * ib:32 * ib + 32]
            importance_weights(xb, qw[32 * ib:32 * ib + 32], sigma2, weight)
            o = (r * (n_per_row // 32) + ib) * block_bytes
            if with_min:
                d, minus_min = make_qkx3_quants(32, nmax, xb, weight, L, Laux, F32(-0.9), F32(0.05), 36)
                put_u16(out, o + 2, fp32_to_fp16(-minus_min))
            else:
                d = make_qx_quants_weighted(32, nmax, xb, L, weight)
            put_u16(out, o, fp32_to_fp16(d))
            qh = np.uint32(0)
            for j in range(16):
                out[o + qs_at + j] = np.uint8((L[j] & 15) | ((L[j + 16] & 15) << 4))
                qh |= np.uint32((L[j] >> 4) & 1) << np.uint32(j)
                qh |= np.uint32((L[j + 16] >> 4) & 1) << np.uint32(j + 16)
            if five_bits:
                for k in range(4):
                    out[o + qh_at + k] = np.uint8((qh >> np.uint32(8 * k)) & np.uint32(255))


def quantize_q4_0_weighted(x, out, weights):
    _quantize_legacy(x, out, weights, 8, False)


def quantize_q4_1_weighted(x, out, weights):
    _quantize_legacy(x, out, weights, 15, True)


def quantize_q5_0_weighted(x, out, weights):
    _quantize_legacy(x, out, weights, 16, False)


def quantize_q5_1_weighted(x, out, weights):
    _quantize_legacy(x, out, weights, 31, True)


@njit(cache=True, parallel=True)
def _quantize_q2_k(x, out, qw):
    """quantize_row_q2_K_impl: per 16 a weighted scale and min search, then both quantized to 4 bits by
    make_qp_quants weighted by each group's total weight, and the levels chosen again against them."""
    per_row = qw.size // 256
    for b in prange(x.size // 256):
        xb, blk = x[256 * b:256 * b + 256], out[84 * b:84 * b + 84]
        qwb = qw[256 * (b % per_row):256 * (b % per_row) + 256]
        L = np.zeros(256, np.int32)
        Laux = np.zeros(16, np.int32)
        mins = np.zeros(16, np.float32)
        scales = np.zeros(16, np.float32)
        sw = np.zeros(16, np.float32)
        weight = np.empty(16, np.float32)
        Ls = np.zeros(16, np.uint8)
        Lm = np.zeros(16, np.uint8)
        sigma2 = sum_squares(xb) / F32(256)
        for j in range(16):
            importance_weights(xb[16 * j:16 * j + 16], qwb[16 * j:16 * j + 16], sigma2, weight)
            sw[j] = sum_of(weight)
            scales[j], mins[j] = make_qkx3_quants(16, 3, xb[16 * j:16 * j + 16], weight, L[16 * j:16 * j + 16], Laux,
                                                  F32(-0.9), F32(0.05), 36)
        dm = make_qp_quants(16, 15, scales, Ls, sw)
        mm = make_qp_quants(16, 15, mins, Lm, sw)
        d_bits, m_bits = fp32_to_fp16(dm), fp32_to_fp16(mm)
        put_u16(blk, 80, d_bits)
        put_u16(blk, 82, m_bits)
        dm, mm = fp16_to_fp32(d_bits), fp16_to_fp32(m_bits)
        for j in range(16):
            blk[j] = np.uint8(Ls[j] | (Lm[j] << 4))
        for j in range(16):
            d = dm * F32(blk[j] & 0xF)
            if d == 0:
                continue
            m = mm * F32(blk[j] >> 4)
            for ii in range(16):
                L[16 * j + ii] = max(0, min(3, nearest_int((xb[16 * j + ii] + m) / d)))
        for j in range(0, 256, 128):
            for l in range(32):
                blk[16 + j // 4 + l] = np.uint8(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4)
                                                | (L[j + l + 96] << 6))


def quantize_q2_k_weighted(x, out, weights):
    _quantize_q2_k(x, out, weights)


@njit(cache=True, parallel=True)
def _quantize_q3_k(x, out, qw):
    """quantize_row_q3_K_impl: per 16 a weighted signed scale (make_qx_quants, 8 levels), the 16 scales to 6 bits
    by make_qx_quants weighted by each group's total weight, the levels chosen again against them."""
    per_row = qw.size // 256
    for b in prange(x.size // 256):
        xb, o = x[256 * b:256 * b + 256], 110 * b
        qwb = qw[256 * (b % per_row):256 * (b % per_row) + 256]
        L = np.zeros(256, np.int32)
        Ls = np.zeros(16, np.int32)
        scales = np.zeros(16, np.float32)
        sw = np.zeros(16, np.float32)
        weight = np.empty(16, np.float32)
        sigma2 = F32(2.0) * sum_squares(xb) / F32(256)
        for j in range(16):
            importance_weights(xb[16 * j:16 * j + 16], qwb[16 * j:16 * j + 16], sigma2, weight)
            sw[j] = sum_of(weight)
            scales[j] = make_qx_quants_weighted(16, 4, xb[16 * j:16 * j + 16], L[16 * j:16 * j + 16], weight)
        for k in range(12):
            out[o + 96 + k] = 0
        d_block = make_qx_quants_weighted(16, 32, scales, Ls, sw)
        put_q3_scales(out, o, Ls)
        put_u16(out, o + 108, fp32_to_fp16(d_block))
        pack_q3_k(xb, out, o, L)


@njit(cache=True, parallel=True)
def _quantize_q4_k_q5_k(x, out, qw, nmax):
    """quantize_row_q4_K_impl (nmax 15) and q5_K_impl (31): per 32 a weighted scale and min (make_qkx3_quants),
    both to 6 bits by make_qp_quants weighted by each group's total weight, the levels chosen again."""
    per_row = qw.size // 256
    block_bytes = 144 if nmax == 15 else 176
    for b in prange(x.size // 256):
        xb, o = x[256 * b:256 * b + 256], block_bytes * b
        qwb = qw[256 * (b % per_row):256 * (b % per_row) + 256]
        L = np.zeros(256, np.int32)
        Laux = np.zeros(32, np.int32)
        scales = np.zeros(8, np.float32)
        mins = np.zeros(8, np.float32)
        sw = np.zeros(8, np.float32)
        weight = np.empty(32, np.float32)
        Ls = np.zeros(8, np.uint8)
        Lm = np.zeros(8, np.uint8)
        sigma2 = F32(2.0) * sum_squares(xb) / F32(256)
        for j in range(8):
            importance_weights(xb[32 * j:32 * j + 32], qwb[32 * j:32 * j + 32], sigma2, weight)
            sw[j] = sum_of(weight)
            scales[j], mins[j] = make_qkx3_quants(32, nmax, xb[32 * j:32 * j + 32], weight, L[32 * j:32 * j + 32],
                                                  Laux, F32(-0.9), F32(0.05), 36)
        d_block = make_qp_quants(8, 63, scales, Ls, sw)
        m_block = make_qp_quants(8, 63, mins, Lm, sw)
        if nmax == 31:                      # Q5_K clamps a wrapped level (255), Q4_K stores its bits as they are
            for j in range(8):
                Ls[j] = min(63, Ls[j])
                Lm[j] = min(63, Lm[j])
        for k in range(12):
            out[o + 4 + k] = 0
        put_scale_min_k4(out, o + 4, Ls, Lm)
        put_u16(out, o, fp32_to_fp16(d_block))
        put_u16(out, o + 2, fp32_to_fp16(m_block))
        requantize_scale_min(xb, out, o, nmax, L)
        if nmax == 15:
            pack_q4_k(L, out, o)
        else:
            pack_q5_k(L, out, o)


@njit(cache=True, parallel=True)
def _quantize_q6_k(x, out, qw):
    """quantize_row_q6_K_impl: per 16 make_qx_quants weighted by the matrix alone (no sigma2 term), the scales to
    int8 against the largest, the levels chosen again."""
    per_row = qw.size // 256
    for b in prange(x.size // 256):
        xb, o = x[256 * b:256 * b + 256], 210 * b
        qwb = qw[256 * (b % per_row):256 * (b % per_row) + 256]
        L = np.zeros(256, np.int32)
        scales = np.zeros(16, np.float32)
        max_scale = F32(0.0)
        max_abs_scale = F32(0.0)
        for ib in range(16):
            scales[ib] = make_qx_quants_weighted(16, 32, xb[16 * ib:16 * ib + 16], L[16 * ib:16 * ib + 16],
                                                 qwb[16 * ib:16 * ib + 16])
            if abs(scales[ib]) > max_abs_scale:
                max_abs_scale = abs(scales[ib])
                max_scale = scales[ib]
        if max_abs_scale < GROUP_MAX_EPS:
            out[o:o + 210] = 0
            continue
        pack_q6_k(xb, out, o, L, scales, max_scale)


def quantize_q3_k_weighted(x, out, weights):
    _quantize_q3_k(x, out, weights)


def quantize_q4_k_weighted(x, out, weights):
    _quantize_q4_k_q5_k(x, out, weights, 15)


def quantize_q5_k_weighted(x, out, weights):
    _quantize_q4_k_q5_k(x, out, weights, 31)


def quantize_q6_k_weighted(x, out, weights):
    _quantize_q6_k(x, out, weights)
