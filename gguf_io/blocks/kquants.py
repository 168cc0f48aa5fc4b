"""The 256-element super-block formats: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.

Quantizers port ggml-quants.c's `quantize_row_q*_K_ref` (what llama-quantize runs
without an importance matrix) step for step in float32; every product or sum that C
does in float is done in float32 here (`F32(...)` around integers, never a Python float
literal in arithmetic), so the chosen levels match llama.cpp's. Layouts, in struct order:
  Q2_K scales[16] qs[64] d:f16 dmin:f16           (84 bytes)
  Q3_K hmask[32] qs[64] scales[12] d:f16          (110)
  Q4_K d:f16 dmin:f16 scales[12] qs[128]          (144)
  Q5_K d:f16 dmin:f16 scales[12] qh[32] qs[128]   (176)
  Q6_K ql[128] qh[64] scales:i8[16] d:f16         (210)
"""
import numpy as np
from numba import njit, prange

from .bits import F32, fp32_to_fp16, get_f16, nearest_int, put_u16, signed_absmax

QK_K = 256
GROUP_MAX_EPS = F32(1e-15)
CHUNK = 64  # super-blocks per parallel work item (scratch buffers are per item)


# ---------------------------------------------------------------- level search helpers

@njit(cache=True)
def make_q3_quants(n, nmax, x, L):
    """Symmetric levels with iterative x^2-weighted refinement (make_q3_quants, do_rmse)."""
    amax, vmax = signed_absmax(x[:n])
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    iscale = F32(-nmax) / vmax
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
        L[i] = l
        w = x[i] * x[i]
        sumlx += w * x[i] * F32(l)
        suml2 += w * F32(l) * F32(l)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = x[i] * x[i]
            slx = sumlx - w * x[i] * F32(L[i])
            if slx > 0:
                sl2 = suml2 - w * F32(L[i]) * F32(L[i])
                new_l = max(-nmax, min(nmax - 1, nearest_int(x[i] * sl2 / slx)))
                if new_l != L[i]:
                    slx += w * x[i] * F32(new_l)
                    sl2 += w * F32(new_l) * F32(new_l)
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[i] += nmax
    return sumlx / suml2 if suml2 > 0 else F32(0.0)


@njit(cache=True)
def make_qx_quants_lanes(n, nmax, xT, LT, LauxT, scales, st):
    """ggml's make_qx_quants (rmse_type 1) for the groups in the columns of xT (n, lanes), side by side
    like make_qkx2_quants_lanes. `st` is (6, lanes) scratch."""
    nl = xT.shape[1]
    vmax, amax, iscale, sumlx, suml2, best = st[0], st[1], st[2], st[3], st[4], st[5]
    for j in range(nl):
        vmax[j] = F32(0.0)
        amax[j] = F32(0.0)
    for i in range(n):
        for j in range(nl):
            ax = abs(xT[i, j])
            if ax > amax[j]:
                amax[j] = ax
                vmax[j] = xT[i, j]
    for k in range(19):
        step = 0 if k == 0 else (k - 10 if k <= 9 else k - 9)     # the plain scale first, then -9..-1, 1..9
        for j in range(nl):
            iscale[j] = -(F32(nmax) + F32(0.1) * F32(step)) / vmax[j] if amax[j] >= GROUP_MAX_EPS else F32(0.0)
            if k == 0:
                iscale[j] = F32(-nmax) / vmax[j] if amax[j] >= GROUP_MAX_EPS else F32(0.0)
            sumlx[j] = F32(0.0)
            suml2[j] = F32(0.0)
        for i in range(n):
            for j in range(nl):
                l = min(F32(nmax - 1), max(F32(-nmax), np.rint(iscale[j] * xT[i, j])))
                LauxT[i, j] = np.int32(l) + nmax
                w = xT[i, j] * xT[i, j]
                sumlx[j] += w * xT[i, j] * l
                suml2[j] += w * l * l
        for j in range(nl):
            if k == 0:
                for i in range(n):
                    LT[i, j] = LauxT[i, j]
                scales[j] = sumlx[j] / suml2[j] if suml2[j] != 0 else F32(0.0)
                best[j] = scales[j] * sumlx[j]
            elif suml2[j] > 0 and sumlx[j] * sumlx[j] > best[j] * suml2[j]:
                for i in range(n):
                    LT[i, j] = LauxT[i, j]
                scales[j] = sumlx[j] / suml2[j]
                best[j] = scales[j] * sumlx[j]
    for j in range(nl):
        if amax[j] < GROUP_MAX_EPS:
            for i in range(n):
                LT[i, j] = 0
            scales[j] = F32(0.0)


@njit(cache=True)
def make_qkx2_quants_lanes(n, nmax, xT, wT, LT, LauxT, rmin, rdelta, nstep, use_mad, scales, mins, st):
    """ggml's make_qkx2_quants for several groups at once: column j of xT (n, lanes) is group j.

    Every group runs exactly ggml's float32 operations in the same order, so the result is
    bit-identical; the groups sit side by side so each step is one SIMD operation across them
    instead of a chain of dependent scalar additions (ggml's sums are sequential, and C without
    fast-math cannot reorder them either). Returns through scales, mins (the negated min).
    `st` is (14, lanes) scratch. Levels use rint, equal to ggml's nearest_int in this range."""
    nl = xT.shape[1]
    vmin, vmax, sum_w, sum_x, scale, best = st[0], st[1], st[2], st[3], st[4], st[5]
    iscale, sum_l, sum_l2, sum_xl, this_scale, this_min, cur = st[6], st[7], st[8], st[9], st[10], st[11], st[12]
    active = st[13]            # 1 where the group is not constant (ggml returns early otherwise)
    for j in range(nl):
        vmin[j] = xT[0, j]
        vmax[j] = xT[0, j]
        sum_w[j] = wT[0, j]
        sum_x[j] = wT[0, j] * xT[0, j]
    for i in range(1, n):
        for j in range(nl):
            xi = xT[i, j]
            vmin[j] = min(vmin[j], xi)
            vmax[j] = max(vmax[j], xi)
            sum_w[j] += wT[i, j]
            sum_x[j] += wT[i, j] * xi
    for j in range(nl):
        if vmin[j] > 0:
            vmin[j] = F32(0.0)
        active[j] = F32(1.0) if vmax[j] != vmin[j] else F32(0.0)
        iscale[j] = F32(nmax) / (vmax[j] - vmin[j]) if active[j] else F32(0.0)
        scale[j] = F32(1.0) / iscale[j] if active[j] else F32(0.0)
        best[j] = F32(0.0)
    for i in range(n):
        for j in range(nl):
            l = min(F32(nmax), max(F32(0.0), np.rint(iscale[j] * (xT[i, j] - vmin[j]))))
            LT[i, j] = np.int32(l)
            diff = scale[j] * l + vmin[j] - xT[i, j]
            best[j] += wT[i, j] * (abs(diff) if use_mad else diff * diff)
    for step in range(nstep + 1):
        for j in range(nl):
            iscale[j] = (rmin + rdelta * F32(step) + F32(nmax)) / (vmax[j] - vmin[j]) if active[j] else F32(0.0)
            sum_l[j] = F32(0.0)
            sum_l2[j] = F32(0.0)
            sum_xl[j] = F32(0.0)
        for i in range(n):
            for j in range(nl):
                l = min(F32(nmax), max(F32(0.0), np.rint(iscale[j] * (xT[i, j] - vmin[j]))))
                LauxT[i, j] = np.int32(l)
                w = wT[i, j]
                sum_l[j] += w * l
                sum_l2[j] += w * l * l
                sum_xl[j] += w * l * xT[i, j]
        for j in range(nl):
            D = sum_w[j] * sum_l2[j] - sum_l[j] * sum_l[j]
            if D > 0:
                this_scale[j] = (sum_w[j] * sum_xl[j] - sum_x[j] * sum_l[j]) / D
                this_min[j] = (sum_l2[j] * sum_x[j] - sum_l[j] * sum_xl[j]) / D
                if this_min[j] > 0:
                    this_min[j] = F32(0.0)
                    this_scale[j] = sum_xl[j] / sum_l2[j]
            cur[j] = F32(0.0)
        for i in range(n):
            for j in range(nl):
                diff = this_scale[j] * F32(LauxT[i, j]) + this_min[j] - xT[i, j]
                cur[j] += wT[i, j] * (abs(diff) if use_mad else diff * diff)
        for j in range(nl):
            D = sum_w[j] * sum_l2[j] - sum_l[j] * sum_l[j]
            if active[j] and D > 0 and cur[j] < best[j]:
                for i in range(n):
                    LT[i, j] = LauxT[i, j]
                best[j] = cur[j]
                scale[j] = this_scale[j]
                vmin[j] = this_min[j]
    for j in range(nl):
        if not active[j]:
            for i in range(n):
                LT[i, j] = 0
            scales[j] = F32(0.0)
        else:
            scales[j] = scale[j]
        mins[j] = -vmin[j]


@njit(cache=True, inline="always")
def _pack_2bit(L, out, o):
    """Four 2-bit levels per byte: byte l of each 32-byte group holds L[l], L[l+32], L[l+64], L[l+96]."""
    for j in range(0, QK_K, 128):
        for l in range(32):
            out[o + j // 4 + l] = np.uint8(L[j + l] | (L[j + l + 32] << 2)
                                           | (L[j + l + 64] << 4) | (L[j + l + 96] << 6))


@njit(cache=True, inline="always")
def get_scale_min_k4(j, raw, o):
    """The j-th 6-bit (scale, min) pair of the 12-byte Q4_K/Q5_K scales field at raw[o]."""
    if j < 4:
        return np.int32(raw[o + j]) & 63, np.int32(raw[o + j + 4]) & 63
    sc = (np.int32(raw[o + j + 4]) & 0xF) | ((np.int32(raw[o + j - 4]) >> 6) << 4)
    m = (np.int32(raw[o + j + 4]) >> 4) | ((np.int32(raw[o + j]) >> 6) << 4)
    return sc, m


@njit(cache=True, inline="always")
def put_scale_min_k4(out, o, scales_q, mins_q):
    for j in range(8):
        ls, lm = scales_q[j], mins_q[j]
        if j < 4:
            out[o + j] = np.uint8(ls)
            out[o + j + 4] = np.uint8(lm)
        else:
            out[o + j + 4] = np.uint8((ls & 0xF) | ((lm & 0xF) << 4))
            out[o + j - 4] |= np.uint8((ls >> 4) << 6)
            out[o + j] |= np.uint8((lm >> 4) << 6)


# ---------------------------------------------------------------- Q2_K

@njit(cache=True, parallel=True)
def quantize_q2_k(x, out):
    nb = x.size // QK_K
    for c in prange((nb + CHUNK - 1) // CHUNK):
        L = np.empty(QK_K, np.int32)
        mins = np.empty(16, np.float32)
        scales = np.empty(16, np.float32)
        xT = np.empty((16, 16), np.float32)
        wT = np.empty((16, 16), np.float32)
        LT = np.empty((16, 16), np.int32)
        LauxT = np.empty((16, 16), np.int32)
        st = np.empty((14, 16), np.float32)
        for b in range(c * CHUNK, min(nb, (c + 1) * CHUNK)):
            xb = x[b * QK_K:(b + 1) * QK_K]
            o = b * 84
            max_scale = F32(0.0)
            max_min = F32(0.0)
            for j in range(16):
                for i in range(16):
                    xT[i, j] = xb[16 * j + i]
                    wT[i, j] = abs(xb[16 * j + i])
            make_qkx2_quants_lanes(16, 3, xT, wT, LT, LauxT, F32(-0.5), F32(0.1), 15, True, scales, mins, st)
            for j in range(16):
                for i in range(16):
                    L[16 * j + i] = LT[i, j]
                max_scale = max(max_scale, scales[j])
                max_min = max(max_min, mins[j])
            if max_scale > 0:
                iscale = F32(15.0) / max_scale
                for j in range(16):
                    out[o + j] = np.uint8(nearest_int(iscale * scales[j]) & 0xFF)
                put_u16(out, o + 80, fp32_to_fp16(max_scale / F32(15.0)))
            else:
                for j in range(16):
                    out[o + j] = 0
                put_u16(out, o + 80, fp32_to_fp16(F32(0.0)))
            if max_min > 0:
                iscale = F32(15.0) / max_min
                for j in range(16):
                    out[o + j] |= np.uint8((nearest_int(iscale * mins[j]) << 4) & 0xFF)
                put_u16(out, o + 82, fp32_to_fp16(max_min / F32(15.0)))
            else:
                put_u16(out, o + 82, fp32_to_fp16(F32(0.0)))
            dall = get_f16(out, o + 80)
            dmin = get_f16(out, o + 82)
            for j in range(16):
                d = dall * F32(out[o + j] & 0xF)
                if d == 0:
                    continue
                dm = dmin * F32(out[o + j] >> 4)
                for ii in range(16):
                    L[16 * j + ii] = max(0, min(3, nearest_int((xb[16 * j + ii] + dm) / d)))
            _pack_2bit(L, out, o + 16)


@njit(cache=True, parallel=True)
def dequantize_q2_k(raw, out):
    for b in prange(raw.size // 84):
        blk, y = raw[b * 84:(b + 1) * 84], out[b * QK_K:(b + 1) * QK_K]
        d = get_f16(blk, 80)
        dmin = get_f16(blk, 82)
        for half in range(2):
            for shift_i in range(4):
                shift = 2 * shift_i
                for sub in range(2):
                    sc = np.int32(blk[8 * half + 2 * shift_i + sub])
                    dl = d * F32(sc & 0xF)
                    ml = dmin * F32(sc >> 4)
                    q = blk[16 + 32 * half + 16 * sub:16 + 32 * half + 16 * sub + 16]
                    ys = y[128 * half + 32 * shift_i + 16 * sub:128 * half + 32 * shift_i + 16 * sub + 16]
                    for l in range(16):
                        ys[l] = dl * F32((np.int32(q[l]) >> shift) & 3) - ml


# ---------------------------------------------------------------- Q3_K

@njit(cache=True, inline="always")
def _q3_scale(raw, o, j):
    """The j-th 6-bit Q3_K scale (offset by 32) from the 12-byte field at raw[o]."""
    low = np.int32(raw[o + j]) & 0xF if j < 8 else np.int32(raw[o + j - 8]) >> 4
    high = (np.int32(raw[o + 8 + j % 4]) >> (2 * (j // 4))) & 3
    return (low | (high << 4)) - 32


@njit(cache=True, inline="always")
def put_q3_scales(out, o, ls):
    """The 16 6-bit scale levels (0..63, 32 meaning 0) into the 12-byte field at out[o + 96] (zeroed before)."""
    for j in range(16):
        if j < 8:
            out[o + 96 + j] = np.uint8(ls[j] & 0xF)
        else:
            out[o + 96 + j - 8] |= np.uint8((ls[j] & 0xF) << 4)
        out[o + 96 + 8 + j % 4] |= np.uint8((ls[j] >> 4) << (2 * (j // 4)))


@njit(cache=True, inline="always")
def pack_q3_k(xb, out, o, L):
    """Levels again against the stored scales (where one is zero L keeps the search's), then the high bits
    into hmask and the low two bits into qs."""
    dall = get_f16(out, o + 108)
    for j in range(16):
        d = dall * F32(_q3_scale(out, o + 96, j))
        if d == 0:
            continue
        for ii in range(16):
            L[16 * j + ii] = max(-4, min(3, nearest_int(xb[16 * j + ii] / d))) + 4
    for k in range(32):
        out[o + k] = 0
    m = 0
    hm = 1
    for j in range(QK_K):
        if L[j] > 3:
            out[o + m] |= np.uint8(hm)
            L[j] -= 4
        m += 1
        if m == 32:
            m = 0
            hm <<= 1
    _pack_2bit(L, out, o + 32)


@njit(cache=True, parallel=True)
def quantize_q3_k(x, out):
    nb = x.size // QK_K
    for c in prange((nb + CHUNK - 1) // CHUNK):
        L = np.empty(QK_K, np.int32)
        scales = np.empty(16, np.float32)
        ls = np.empty(16, np.int32)
        for b in range(c * CHUNK, min(nb, (c + 1) * CHUNK)):
            xb = x[b * QK_K:(b + 1) * QK_K]
            o = b * 110
            max_scale = F32(0.0)
            amax = F32(0.0)
            for j in range(16):
                scales[j] = make_q3_quants(16, 4, xb[16 * j:16 * j + 16], L[16 * j:16 * j + 16])
                scale = abs(scales[j])
                if scale > amax:
                    amax = scale
                    max_scale = scales[j]
            for k in range(12):
                out[o + 96 + k] = 0
            if max_scale != 0:
                iscale = F32(-32.0) / max_scale
                for j in range(16):
                    ls[j] = max(-32, min(31, nearest_int(iscale * scales[j]))) + 32
                put_q3_scales(out, o, ls)
                put_u16(out, o + 108, fp32_to_fp16(F32(1.0) / iscale))
            else:
                put_u16(out, o + 108, fp32_to_fp16(F32(0.0)))
            pack_q3_k(xb, out, o, L)


@njit(cache=True, parallel=True)
def dequantize_q3_k(raw, out):
    for b in prange(raw.size // 110):
        blk, y = raw[b * 110:(b + 1) * 110], out[b * QK_K:(b + 1) * QK_K]
        d_all = get_f16(blk, 108)
        hmask = blk[0:32]
        for half in range(2):
            q = blk[32 + 32 * half:64 + 32 * half]
            for shift_i in range(4):
                shift = 2 * shift_i
                bit = 4 * half + shift_i
                for sub in range(2):
                    dl = d_all * F32(_q3_scale(blk, 96, 8 * half + 2 * shift_i + sub))
                    ys = y[128 * half + 32 * shift_i + 16 * sub:128 * half + 32 * shift_i + 16 * sub + 16]
                    for l in range(16):
                        low = (np.int32(q[16 * sub + l]) >> shift) & 3
                        high = 4 - 4 * ((np.int32(hmask[16 * sub + l]) >> bit) & 1)
                        ys[l] = dl * F32(low - high)


# ---------------------------------------------------------------- Q4_K and Q5_K

@njit(cache=True, inline="always")
def _quantize_scale_min_blocks(xb, nmax, rmin, rdelta, nstep, L, xT, wT, LT, LauxT, st, scales, mins):
    """Eight 32-element sub-blocks, fitted side by side with make_qkx2_quants_lanes; returns (max scale, max min)."""
    for j in range(8):
        for i in range(32):
            xT[i, j] = xb[32 * j + i]
    for j in range(8):
        st[0, j] = F32(0.0)
    for i in range(32):
        for j in range(8):
            st[0, j] += xT[i, j] * xT[i, j]
    for j in range(8):
        st[1, j] = np.sqrt(st[0, j] / F32(32.0))
    for i in range(32):
        for j in range(8):
            wT[i, j] = st[1, j] + abs(xT[i, j])
    make_qkx2_quants_lanes(32, nmax, xT, wT, LT, LauxT, rmin, rdelta, nstep, False, scales, mins, st)
    max_scale = F32(0.0)
    max_min = F32(0.0)
    for j in range(8):
        for i in range(32):
            L[32 * j + i] = LT[i, j]
        max_scale = max(max_scale, scales[j])
        max_min = max(max_min, mins[j])
    return max_scale, max_min


@njit(cache=True, inline="always")
def _encode_scale_min(out, o, max_scale, max_min, scales, mins, ls, lm):
    """Write d, dmin (f16) and the 12-byte 6-bit scales/mins field starting at out[o]."""
    inv_scale = F32(63.0) / max_scale if max_scale > 0 else F32(0.0)
    inv_min = F32(63.0) / max_min if max_min > 0 else F32(0.0)
    for j in range(8):
        ls[j] = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
        lm[j] = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
    put_scale_min_k4(out, o + 4, ls, lm)
    put_u16(out, o, fp32_to_fp16(max_scale / F32(63.0)))
    put_u16(out, o + 2, fp32_to_fp16(max_min / F32(63.0)))


@njit(cache=True, inline="always")
def requantize_scale_min(xb, out, o, nmax, L):
    """Levels again against the scales as stored (f16 d times 6-bit scale)."""
    dall = get_f16(out, o)
    dmin = get_f16(out, o + 2)
    for j in range(8):
        sc, m = get_scale_min_k4(j, out, o + 4)
        d = dall * F32(sc)
        if d == 0:
            continue
        dm = dmin * F32(m)
        for ii in range(32):
            L[32 * j + ii] = max(0, min(nmax, nearest_int((xb[32 * j + ii] + dm) / d)))


@njit(cache=True, inline="always")
def pack_q4_k(L, out, o):
    for j in range(0, QK_K, 64):
        for l in range(32):
            out[o + 16 + j // 2 + l] = np.uint8(L[j + l] | (L[j + l + 32] << 4))


@njit(cache=True, inline="always")
def pack_q5_k(L, out, o):
    """The fifth bits into qh (two per 64 levels), the low four into qs."""
    for k in range(32):
        out[o + 16 + k] = 0
    m1, m2 = 1, 2
    for n in range(0, QK_K, 64):
        for j in range(32):
            l1 = L[n + j]
            if l1 > 15:
                l1 -= 16
                out[o + 16 + j] |= np.uint8(m1)
            l2 = L[n + j + 32]
            if l2 > 15:
                l2 -= 16
                out[o + 16 + j] |= np.uint8(m2)
            out[o + 48 + n // 2 + j] = np.uint8(l1 | (l2 << 4))
        m1 <<= 2
        m2 <<= 2


@njit(cache=True, parallel=True)
def quantize_q4_k(x, out):
    nb = x.size // QK_K
    for c in prange((nb + CHUNK - 1) // CHUNK):
        L = np.empty(QK_K, np.int32)
        xT = np.empty((32, 8), np.float32)
        wT = np.empty((32, 8), np.float32)
        LT = np.empty((32, 8), np.int32)
        LauxT = np.empty((32, 8), np.int32)
        st = np.empty((14, 8), np.float32)
        scales = np.empty(8, np.float32)
        mins = np.empty(8, np.float32)
        ls = np.empty(8, np.int32)
        lm = np.empty(8, np.int32)
        for b in range(c * CHUNK, min(nb, (c + 1) * CHUNK)):
            xb = x[b * QK_K:(b + 1) * QK_K]
            o = b * 144
            max_scale, max_min = _quantize_scale_min_blocks(xb, 15, F32(-1.0), F32(0.1), 20,
                                                            L, xT, wT, LT, LauxT, st, scales, mins)
            _encode_scale_min(out, o, max_scale, max_min, scales, mins, ls, lm)
            requantize_scale_min(xb, out, o, 15, L)
            pack_q4_k(L, out, o)


@njit(cache=True, parallel=True)
def dequantize_q4_k(raw, out):
    for b in prange(raw.size // 144):
        blk, y = raw[b * 144:(b + 1) * 144], out[b * QK_K:(b + 1) * QK_K]
        d = get_f16(blk, 0)
        dmin = get_f16(blk, 2)
        for g in range(4):
            sc1, m1 = get_scale_min_k4(2 * g, blk, 4)
            sc2, m2 = get_scale_min_k4(2 * g + 1, blk, 4)
            d1, dm1 = d * F32(sc1), dmin * F32(m1)
            d2, dm2 = d * F32(sc2), dmin * F32(m2)
            q = blk[16 + 32 * g:48 + 32 * g]
            ys = y[64 * g:64 * g + 64]
            for l in range(32):
                ys[l] = d1 * F32(np.int32(q[l]) & 0xF) - dm1
                ys[32 + l] = d2 * F32(np.int32(q[l]) >> 4) - dm2


@njit(cache=True, parallel=True)
def quantize_q5_k(x, out):
    nb = x.size // QK_K
    for c in prange((nb + CHUNK - 1) // CHUNK):
        L = np.empty(QK_K, np.int32)
        xT = np.empty((32, 8), np.float32)
        wT = np.empty((32, 8), np.float32)
        LT = np.empty((32, 8), np.int32)
        LauxT = np.empty((32, 8), np.int32)
        st = np.empty((14, 8), np.float32)
        scales = np.empty(8, np.float32)
        mins = np.empty(8, np.float32)
        ls = np.empty(8, np.int32)
        lm = np.empty(8, np.int32)
        for b in range(c * CHUNK, min(nb, (c + 1) * CHUNK)):
            xb = x[b * QK_K:(b + 1) * QK_K]
            o = b * 176
            max_scale, max_min = _quantize_scale_min_blocks(xb, 31, F32(-0.5), F32(0.1), 15,
                                                            L, xT, wT, LT, LauxT, st, scales, mins)
            _encode_scale_min(out, o, max_scale, max_min, scales, mins, ls, lm)
            requantize_scale_min(xb, out, o, 31, L)
            pack_q5_k(L, out, o)


@njit(cache=True, parallel=True)
def dequantize_q5_k(raw, out):
    for b in prange(raw.size // 176):
        blk, y = raw[b * 176:(b + 1) * 176], out[b * QK_K:(b + 1) * QK_K]
        d = get_f16(blk, 0)
        dmin = get_f16(blk, 2)
        qh = blk[16:48]
        for g in range(4):
            sc1, m1 = get_scale_min_k4(2 * g, blk, 4)
            sc2, m2 = get_scale_min_k4(2 * g + 1, blk, 4)
            d1, dm1 = d * F32(sc1), dmin * F32(m1)
            d2, dm2 = d * F32(sc2), dmin * F32(m2)
            q = blk[48 + 32 * g:80 + 32 * g]
            ys = y[64 * g:64 * g + 64]
            for l in range(32):
                h = np.int32(qh[l])
                lo = (np.int32(q[l]) & 0xF) | (((h >> (2 * g)) & 1) << 4)
                hi = (np.int32(q[l]) >> 4) | (((h >> (2 * g + 1)) & 1) << 4)
                ys[l] = d1 * F32(lo) - dm1
                ys[32 + l] = d2 * F32(hi) - dm2


# ---------------------------------------------------------------- Q6_K

@njit(cache=True, inline="always")
def pack_q6_k(xb, out, o, L, scales, max_scale):
    """d (the largest scale over -128, f16) and the int8 scales against it, the levels again against them, then
    the low four bits into ql, the high two into qh."""
    iscale = F32(-128.0) / max_scale
    put_u16(out, o + 208, fp32_to_fp16(F32(1.0) / iscale))
    for ib in range(16):
        out[o + 192 + ib] = np.uint8(min(127, nearest_int(iscale * scales[ib])) & 0xFF)
    dall = get_f16(out, o + 208)
    for j in range(16):
        d = dall * F32(np.int8(out[o + 192 + j]))
        if d == 0:
            continue
        for ii in range(16):
            L[16 * j + ii] = max(-32, min(31, nearest_int(xb[16 * j + ii] / d))) + 32
    for half in range(2):
        j = 128 * half
        ql = o + 64 * half
        qh = o + 128 + 32 * half
        for l in range(32):
            a, b_, c_, d_ = L[j + l], L[j + l + 32], L[j + l + 64], L[j + l + 96]
            out[ql + l] = np.uint8((a & 0xF) | ((c_ & 0xF) << 4))
            out[ql + l + 32] = np.uint8((b_ & 0xF) | ((d_ & 0xF) << 4))
            out[qh + l] = np.uint8((a >> 4) | ((b_ >> 4) << 2) | ((c_ >> 4) << 4) | ((d_ >> 4) << 6))


@njit(cache=True, parallel=True)
def quantize_q6_k(x, out):
    nb = x.size // QK_K
    for c in prange((nb + CHUNK - 1) // CHUNK):
        L = np.empty(QK_K, np.int32)
        scales = np.empty(16, np.float32)
        xT = np.empty((16, 16), np.float32)
        LT = np.empty((16, 16), np.int32)
        LauxT = np.empty((16, 16), np.int32)
        st = np.empty((6, 16), np.float32)
        for b in range(c * CHUNK, min(nb, (c + 1) * CHUNK)):
            xb = x[b * QK_K:(b + 1) * QK_K]
            o = b * 210
            max_scale = F32(0.0)
            max_abs_scale = F32(0.0)
            for ib in range(16):
                for i in range(16):
                    xT[i, ib] = xb[16 * ib + i]
            make_qx_quants_lanes(16, 32, xT, LT, LauxT, scales, st)
            for ib in range(16):
                for i in range(16):
                    L[16 * ib + i] = LT[i, ib]
                scale = scales[ib]
                if abs(scale) > max_abs_scale:
                    max_abs_scale = abs(scale)
                    max_scale = scale
            if max_abs_scale < GROUP_MAX_EPS:
                for k in range(210):
                    out[o + k] = 0
                continue
            pack_q6_k(xb, out, o, L, scales, max_scale)


@njit(cache=True, parallel=True)
def dequantize_q6_k(raw, out):
    for b in prange(raw.size // 210):
        blk, y = raw[b * 210:(b + 1) * 210], out[b * QK_K:(b + 1) * QK_K]
        d = get_f16(blk, 208)
        for half in range(2):
            ql = blk[64 * half:64 * half + 64]
            qh = blk[128 + 32 * half:160 + 32 * half]
            sc = blk[192 + 8 * half:200 + 8 * half]
            ys = y[128 * half:128 * half + 128]
            for part in range(2):
                s1 = d * F32(np.int8(sc[part]))
                s2 = d * F32(np.int8(sc[part + 2]))
                s3 = d * F32(np.int8(sc[part + 4]))
                s4 = d * F32(np.int8(sc[part + 6]))
                for k in range(16):
                    l = 16 * part + k
                    h = np.int32(qh[l])
                    a = np.int32(ql[l])
                    c = np.int32(ql[l + 32])
                    ys[l] = s1 * F32(((a & 0xF) | ((h & 3) << 4)) - 32)
                    ys[l + 32] = s2 * F32(((c & 0xF) | (((h >> 2) & 3) << 4)) - 32)
                    ys[l + 64] = s3 * F32(((a >> 4) | (((h >> 4) & 3) << 4)) - 32)
                    ys[l + 96] = s4 * F32(((c >> 4) | (((h >> 6) & 3) << 4)) - 32)
