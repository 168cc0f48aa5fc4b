"""Integer dot products of 16-row weight tiles with 15-bit activations, written as LLVM IR.

Numba has no vector types and LLVM does not find VPDPBUSD (AVX-512 VNNI: 64 unsigned-byte x
signed-byte products summed into 16 int32 lanes per instruction) or its kin in scalar loops, so every
format's tile dot product is emitted here directly, with the byte multiplies of the kernel path
isa.py chose (VPDPBUSD, VPMADDUBSW + VPMADDWD, SDOT, widening multiplies): one intrinsic (a switch
on the format) that tiles.matmul calls, in a one-row and a three-row form.

Tile layout (tiles.py writes it): 16 consecutive weight rows, one 32-element block after another.
For each block, the codes as 64-byte vectors: byte 4*r + t holds row r's codes for elements 4q + t
of some quads q (8-bit codes: one quad per vector; 4-bit: quads k and k + 4 in vector k; 2-bit:
four quads per vector; high bit planes likewise, see TileFormat). Then the block's per-row scales
(and mins). One VPDPBUSD takes a vector and 4 activation bytes broadcast to every row: the 16 rows'
partial sums stay in one register, with no horizontal sums.

Activations are not float32 here: each 32-element block is x = dx * q with q a 15-bit integer
(|q| <= 16256 = 127 * 128), split as q = 128 * hi + lo (|hi| <= 127, 0 <= lo < 128) so that both
halves are signed bytes no multiply instruction saturates on; every code meets both, so a block
costs two multiplies per vector. The rounding is amax / 32512 per block (llama.cpp rounds to
amax / 254, Q8_0/Q8_K): nibble's logits stay within float-reference noise (tests/test_fidelity.py).
"""
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .isa import KernelPath

I8, I32, I64, F32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
LANES = 16
X_PLANES = 2          # activation bytes per element: hi and lo
PREFETCH_BYTES = 4096  # how far ahead of its reads the kernel asks the cache for weight bytes
HI_SHIFT = 7           # an activation integer q = hi << HI_SHIFT | lo, both halves signed bytes


@dataclass(frozen=True)
class TileFormat:
    """How a format's tile records read. value = factor * scale * (code - offset) + min_sign * min.

    A code is `low_bits` from a low plane and `high_bits` more from a high plane (0-2 bits), or,
    with `lookup`, the table's entry at that index (IQ4: values + 128, so that codes are unsigned).
    A plane of b bits per code holds quad q (4 consecutive elements of the 16 rows) in vector
    q % b at bit b * (q // b).
    scale / min kinds: "f16" one half float per 32-block and row; "k32" / "k16" a small signed
    integer per 32 / 16 elements and row, times a half float per record (super-block) and row; `factor`
    (a power of two) scales those record half floats."""
    name: str
    low_bits: int
    offset: int = 0
    scale: str = "f16"
    minimum: Optional[str] = None
    min_sign: int = 1
    record_blocks: int = 1          # 32-blocks per record (8 for 256-element super-blocks)
    high_bits: int = 0
    lookup: Optional[tuple] = None
    factor: float = 1.0

    @property
    def code_bytes(self):
        return 64 * (self.low_bits + self.high_bits)

    @staticmethod
    def field_bytes(kind):
        return {None: 0, "f16": 2 * LANES, "k32": LANES, "k16": 2 * LANES}[kind]

    @property
    def block_stride(self):
        """Bytes from one 32-block to the next inside a record: its codes, then its scales and mins, so that
        a record reads front to back (the hardware prefetchers follow one stream, not two)."""
        return self.code_bytes + self.field_bytes(self.scale) + self.field_bytes(self.minimum)

    def field_offsets(self):
        """Byte offsets of block 0's scales and mins (block j's are block_stride * j further on), then of
        the record's scale and min, which follow the last block."""
        scales = self.code_bytes
        mins = scales + self.field_bytes(self.scale)
        record_scale = self.record_blocks * self.block_stride
        record_min = record_scale + 2 * LANES * (self.scale in ("k32", "k16"))
        return scales, mins, record_scale, record_min

    @property
    def record_bytes(self):
        return self.field_offsets()[3] + 2 * LANES * (self.minimum in ("k32", "k16"))

    @property
    def per_16(self):
        return "k16" in (self.scale, self.minimum)


def plane_position(bits, quad):
    """(vector, bit shift) of a quad's codes in a plane of `bits` bits per code."""
    return quad % bits, bits * (quad // bits)


def _splat(builder, value, vector_type):
    undef = ir.Constant(vector_type, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(I32, vector_type.count), None))


def _load(builder, base, offset, pointee):
    """A load from memory that nothing writes while the kernel runs (weights, activations): marked invariant, so
    that LLVM loads a value again rather than spill it when registers run short (AVX2 has 16)."""
    address = builder.gep(base, [offset if isinstance(offset, ir.Value) else ir.Constant(I64, offset)])
    value = builder.load(builder.bitcast(address, pointee.as_pointer()), align=1)
    value.set_metadata("invariant.load", builder.module.add_metadata([]))
    return value


def _data(context, builder, array_type, array):
    return cgutils.create_struct_proxy(array_type)(context, builder, value=array).data


# ---------------------------------------------------------------- multiplying bytes, per kernel path
# A path's register holds `vb` bytes: 64 (AVX-512), 32 (AVX2), 16 (NEON): vb / 4 of the tile's 16 rows.
# block_dots(builder, codes, x_words) -> per x row, the two 16-element halves' sums over those rows (<vb/4 x i32>
# each) of code * q, q = 128 * hi + lo, where codes are the rows' 8 quad vectors of one block and
# x_words[row](plane, quad) loads the 4 activation bytes of a quad (plane 0: hi, 1: lo). Every path adds the
# same exact integers.

def _intrinsic(module, name, result, *arguments):
    return cgutils.get_or_insert_function(module, ir.FunctionType(result, list(arguments)), name)


def _high_low(builder, hi, lo):
    return builder.add(builder.shl(hi, ir.Constant(hi.type, [HI_SHIFT] * hi.type.count)), lo)


class _ByteDot:
    def __init__(self, module, vector_bytes, max_code):
        self.module, self.vb = module, vector_bytes
        self.v_bytes = ir.VectorType(I8, vector_bytes)
        self.v_i32 = ir.VectorType(I32, vector_bytes // 4)

    def x_bytes(self, builder, word):
        """4 activation bytes repeated across a register."""
        return builder.bitcast(_splat(builder, word, self.v_i32), self.v_bytes)

    def block_dots(self, builder, codes, x_words):
        return [self.half_dots(builder, codes, x_word) for x_word in x_words]

    def lookup(self, builder, table, codes):
        """table[code] for codes < 16, in every byte (x86: PSHUFB within each 16-byte lane)."""
        name = {64: "llvm.x86.avx512.pshuf.b.512", 32: "llvm.x86.avx2.pshuf.b"}[self.vb]
        pshufb = _intrinsic(self.module, name, self.v_bytes, self.v_bytes, self.v_bytes)
        return builder.call(pshufb, [ir.Constant(self.v_bytes, table * (self.vb // 16)), codes])


class _AccumulateDot(_ByteDot):
    """An instruction that adds 4 byte products into each int32 lane: VPDPBUSD (unsigned codes x signed bytes)
    or SDOT (signed x signed)."""

    def accumulate(self, builder, acc, codes, x):
        function = _intrinsic(self.module, f"llvm.x86.avx512.vpdpbusd.{8 * self.vb}",    # VEX-encoded on AVX-VNNI
                              self.v_i32, self.v_i32, self.v_i32, self.v_i32)
        return builder.call(function, [acc, builder.bitcast(codes, self.v_i32), builder.bitcast(x, self.v_i32)])

    def half_dots(self, builder, codes, x_word):
        halves = []
        for half in range(2):
            planes = []
            for plane in range(X_PLANES):
                acc = ir.Constant(self.v_i32, None)
                for quad in range(4 * half, 4 * half + 4):
                    acc = self.accumulate(builder, acc, codes[quad], self.x_bytes(builder, x_word(plane, quad)))
                planes.append(acc)
            halves.append(_high_low(builder, *planes))
        return halves


class _Sdot(_AccumulateDot):
    def accumulate(self, builder, acc, codes, x):
        sdot = _intrinsic(self.module, "llvm.aarch64.neon.sdot.v4i32.v16i8", self.v_i32, self.v_i32, self.v_bytes,
                          self.v_bytes)
        return builder.call(sdot, [acc, codes, x])

    def lookup(self, builder, table, codes):
        tbl = _intrinsic(self.module, "llvm.aarch64.neon.tbl1.v16i8", self.v_bytes, self.v_bytes, self.v_bytes)
        return builder.call(tbl, [ir.Constant(self.v_bytes, table), codes])


class _Maddubs(_ByteDot):
    """VPMADDUBSW (pairs of unsigned x signed byte products, into saturating int16) then VPMADDWD (pairs of int16
    into int32, times 128 for the hi plane and 1 for lo). Products of several quads are added in int16 first, as
    many as cannot reach 32767: |code| * 127 * 2 per quad (activation bytes are within +-127), so 4 quads for codes
    up to 5 bits, 2 for 6 bits, 1 for signed 8-bit codes; those go in as |code| with the code's sign moved onto the
    activation (VPSIGNB)."""

    def __init__(self, module, vector_bytes, max_code):
        super().__init__(module, vector_bytes, max_code)
        self.v_i16 = ir.VectorType(ir.IntType(16), vector_bytes // 2)
        self.quads_together = max(1, min(4, 32767 // (2 * 127 * max_code)))
        self.signed = max_code > 127
        wide = vector_bytes == 64
        self.pmaddubs = _intrinsic(module, "llvm.x86.avx512.pmaddubs.w.512" if wide else "llvm.x86.avx2.pmadd.ub.sw",
                                   self.v_i16, self.v_bytes, self.v_bytes)
        self.pmaddwd = _intrinsic(module, "llvm.x86.avx512.pmaddw.d.512" if wide else "llvm.x86.avx2.pmadd.wd",
                                  self.v_i32, self.v_i16, self.v_i16)

    def product(self, builder, codes, x):
        if not self.signed:
            return builder.call(self.pmaddubs, [codes, x])
        negative = builder.icmp_signed("<", codes, ir.Constant(self.v_bytes, None))
        magnitude = builder.select(negative, builder.neg(codes), codes)
        return builder.call(self.pmaddubs, [magnitude, builder.select(negative, builder.neg(x), x)])

    def block_dots(self, builder, codes, x_words):
        out = [[None, None] for _ in x_words]
        for half in range(2):
            for plane, factor in ((0, 1 << HI_SHIFT), (1, 1)):
                factors = ir.Constant(self.v_i16, [factor] * self.v_i16.count)
                quads = range(4 * half, 4 * half + 4)
                for first in quads[::self.quads_together]:
                    for k, x_word in enumerate(x_words):
                        summed = None
                        for quad in range(first, first + self.quads_together):
                            product = self.product(builder, codes[quad], self.x_bytes(builder, x_word(plane, quad)))
                            summed = product if summed is None else builder.add(summed, product)
                        wide = builder.call(self.pmaddwd, [summed, factors])
                        out[k][half] = wide if out[k][half] is None else builder.add(out[k][half], wide)
        return out


class _Widen(_Sdot):
    """Plain multiplies of bytes widened to int32, summed in groups of 4 (ARM64 without the dot-product
    extension: LLVM turns these into widening NEON multiplies and pairwise adds)."""

    def half_dots(self, builder, codes, x_word):
        wide = ir.VectorType(I32, self.vb)
        halves = []
        for half in range(2):
            planes = []
            for plane in range(X_PLANES):
                products = None
                for quad in range(4 * half, 4 * half + 4):
                    x = builder.sext(self.x_bytes(builder, x_word(plane, quad)), wide)
                    product = builder.mul(builder.zext(codes[quad], wide), x)
                    products = product if products is None else builder.add(products, product)
                undef = ir.Constant(wide, ir.Undefined)
                rows = [builder.shuffle_vector(products, undef, ir.Constant(self.v_i32, list(range(t, self.vb, 4))))
                        for t in range(4)]
                planes.append(builder.add(builder.add(rows[0], rows[1]), builder.add(rows[2], rows[3])))
            halves.append(_high_low(builder, *planes))
        return halves


BYTE_DOTS = {"vpdpbusd": _AccumulateDot, "maddubs": _Maddubs, "sdot": _Sdot, "widen": _Widen}
SIGNED_DOTS = ("maddubs", "sdot")     # paths that take codes above 127 as signed values (code - 128)


def _tile_dot_emitter(fmt: TileFormat, path: KernelPath):
    """The IR of one format's tile dot product on one kernel path (see make_tile_dot)."""
    scales_at, mins_at, record_scale_at, record_min_at = fmt.field_offsets()
    max_code = max(fmt.lookup) if fmt.lookup else (1 << (fmt.low_bits + fmt.high_bits)) - 1
    signed = path.dot in SIGNED_DOTS and max_code > 127
    assert not signed or fmt.offset == 128, fmt
    offset = 0 if signed else fmt.offset       # signed codes are code - offset already

    vb = path.vector_bytes
    v_part = ir.VectorType(I8, vb)
    L = vb // 4                         # tile rows per register: the kernel runs the tile's rows L at a time
    V_I32, V_F32, V_HALF, V_I8 = (ir.VectorType(t, L) for t in (I32, F32, ir.HalfType(), I8))   # one per row

    def bytes_of(value):
        return ir.Constant(v_part, [value] * vb)

    def plane_code(builder, w, at, bits, quad, loaded):
        vector, shift = plane_position(bits, quad)
        key = (at, vector)
        if key not in loaded:
            loaded[key] = _load(builder, w.codes, at + 64 * vector, v_part)
        v = loaded[key]
        if shift:
            v = builder.lshr(v, bytes_of(shift))
        if shift + bits < 8:
            v = builder.and_(v, bytes_of((1 << bits) - 1))
        return v

    def emit_codes(builder, byte_dot, w):
        """A block's codes for L rows as 8 vectors of bytes, one per quad (unpacked once, used by every x row);
        signed values (code - 128) where the path's multiply cannot take unsigned bytes this large."""
        loaded, codes = {}, []
        for quad in range(8):
            code = plane_code(builder, w, 0, fmt.low_bits, quad, loaded)
            if fmt.high_bits:
                high = plane_code(builder, w, 64 * fmt.low_bits, fmt.high_bits, quad, loaded)
                code = builder.or_(code, builder.shl(high, bytes_of(fmt.low_bits)))
            if fmt.lookup:
                table = [v - 128 if signed else v for v in fmt.lookup]
                code = byte_dot.lookup(builder, [v - 256 if v > 127 else v for v in table], code)
            elif signed:
                code = builder.xor(code, bytes_of(-128))
            codes.append(code)
        return codes

    def without_offset(builder, dot, xsum):
        if not offset:
            return dot
        return builder.sub(dot, _splat(builder, builder.mul(xsum, ir.Constant(I32, offset)), V_I32))

    def emit_half_float_scales(builder, fma, w, block_dot, dx, acc):
        """acc += d * dx * (dot - offset * sum x) (+ m * dx * sum x): one half float (and min) per 32-block."""
        dot, xsum, _ = block_dot
        scale = builder.fpext(_load(builder, w.halves, scales_at, V_HALF), V_F32)
        acc = builder.call(fma, [builder.sitofp(without_offset(builder, dot, xsum), V_F32),
                                 builder.fmul(scale, _splat(builder, dx, V_F32)), acc])
        if fmt.minimum:
            minimum = builder.fpext(_load(builder, w.halves, mins_at, V_HALF), V_F32)
            x_total = builder.fmul(dx, builder.sitofp(xsum, F32))
            acc = builder.call(fma, [minimum, _splat(builder, x_total, V_F32), acc])
        return acc

    def emit_integer_scales(builder, fma, w, halves, dx, record_scale, record_min, acc):
        """Super-block formats, one activation row (generation): the small integer scales (and mins) multiply
        the integer dot products before one conversion per 32-block (ggml's order); |sum| < 2**31 for every
        format's code and scale ranges with 15-bit activations (worst cases Q6_K and IQ4_XS: 2.13e9). Fewer
        instructions than emit_float_scales when nothing is shared: matvec 1.1-1.2x faster per core."""
        scaled = mins = None
        for dot, xsum, half in halves:
            at = LANES * half if fmt.scale == "k16" else 0
            small = builder.sext(_load(builder, w.bytes, scales_at + at, V_I8), V_I32)
            term = builder.mul(without_offset(builder, dot, xsum), small)
            scaled = term if scaled is None else builder.add(scaled, term)
            if fmt.minimum:
                small_min = builder.sext(_load(builder, w.bytes, mins_at + at, V_I8), V_I32)
                term = builder.mul(small_min, _splat(builder, xsum, V_I32))
                mins = term if mins is None else builder.add(mins, term)
        acc = builder.call(fma, [builder.sitofp(scaled, V_F32), builder.fmul(record_scale, _splat(builder, dx, V_F32)), acc])
        if fmt.minimum:
            signed_dx = builder.fneg(dx) if fmt.min_sign < 0 else dx
            acc = builder.call(fma, [builder.sitofp(mins, V_F32), builder.fmul(record_min, _splat(builder, signed_dx, V_F32)), acc])
        return acc

    def emit_float_scales(builder, fma, w, halves, dx, record_scale, record_min, acc):
        """Super-block formats, several activation rows (prompt processing): acc += (small scale * record
        scale * dx) * dot (- (small min * record min) * dx * sum x) per 32-block (or 16-element half). The
        small scales times the record's scale are the same for every activation row, so the three-row pass
        computes them once (LLVM shares the identical loads and products); per row that leaves one multiply
        and two FMAs, where integer products of the small scales took six of the multiply units' slots that
        VPDPBUSD needs (K-quant matmuls ran at 55-70% of Q4_0's)."""
        for dot, xsum, half in halves:
            at = LANES * half if fmt.scale == "k16" else 0
            small = builder.sitofp(builder.sext(_load(builder, w.bytes, scales_at + at, V_I8), V_I32), V_F32)
            weight = builder.fmul(builder.fmul(small, record_scale), _splat(builder, dx, V_F32))
            acc = builder.call(fma, [builder.sitofp(without_offset(builder, dot, xsum), V_F32), weight, acc])
            if fmt.minimum:
                small_min = builder.sitofp(builder.sext(_load(builder, w.bytes, mins_at + at, V_I8), V_I32), V_F32)
                x_total = builder.fmul(builder.fneg(dx) if fmt.min_sign < 0 else dx, builder.sitofp(xsum, F32))
                acc = builder.call(fma, [builder.fmul(small_min, record_min), _splat(builder, x_total, V_F32), acc])
        return acc

    def emit_parts(context, builder, arg_types, args, x_rows, parts):
        """Rows L * part to L * part + L of the tile for each of `parts` (IR integers), in one pass over its
        records. AVX-512 takes the 16 rows as one part; narrower paths take them in 2 or 4 parts, and for
        several x rows one pass per part (see emit)."""
        W_, w_at_, XQ_, XD_, XS_, x_row_, n_blocks_, out_, out_at_, n_valid_, out_stride_ = args
        module = builder.module
        byte_dot = BYTE_DOTS[path.dot](module, vb, 128 if signed else max_code)
        fma = _intrinsic(module, f"llvm.fma.v{L}f32", V_F32, V_F32, V_F32, V_F32)
        prefetch = _intrinsic(module, "llvm.prefetch.p0", ir.VoidType(), I8.as_pointer(), I32, I32, I32)
        w0 = builder.gep(_data(context, builder, arg_types[0], W_), [w_at_])
        xq_base = _data(context, builder, arg_types[2], XQ_)
        xd_base = _data(context, builder, arg_types[3], XD_)
        xs_base = _data(context, builder, arg_types[4], XS_)
        activations = []        # per x row: its hi/lo bytes, scales and sums
        for k in range(x_rows):
            first = builder.mul(builder.add(x_row_, ir.Constant(I64, k)), n_blocks_)
            activations.append((builder.gep(xq_base, [builder.mul(first, ir.Constant(I64, 64))]),
                                builder.gep(xd_base, [first]),
                                builder.gep(xs_base, [builder.mul(first, ir.Constant(I64, 2))])))
        totals = {(k, p): cgutils.alloca_once_value(builder, ir.Constant(V_F32, None))
                  for k in range(x_rows) for p in range(len(parts))}
        emit_scales = emit_integer_scales if x_rows == 1 else emit_float_scales
        n_records = builder.udiv(n_blocks_, ir.Constant(I64, fmt.record_blocks))
        with cgutils.for_range(builder, n_records) as loop:
            w = builder.gep(w0, [builder.mul(loop.index, ir.Constant(I64, fmt.record_bytes))])
            # each part's bytes: codes at vb * part in each 64-byte vector; one-byte and half-float fields per row
            fields = [SimpleNamespace(**{name: builder.gep(w, [builder.mul(part, ir.Constant(I64, size))])
                                         for name, size in (("codes", vb), ("bytes", L), ("halves", 2 * L))})
                      for part in parts]

            def prefetch_lines(base, start, stop):
                for line in range(start, stop, 64):
                    ahead = builder.gep(base, [ir.Constant(I64, PREFETCH_BYTES + line)])
                    builder.call(prefetch, [ahead, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])
            record_scale, record_min = [None] * len(parts), [None] * len(parts)
            for p, f in enumerate(fields):
                if fmt.scale != "f16":
                    record_scale[p] = builder.fpext(_load(builder, f.halves, record_scale_at, V_HALF), V_F32)
                    if fmt.factor != 1.0:
                        record_scale[p] = builder.fmul(record_scale[p], ir.Constant(V_F32, [fmt.factor] * L))
                if fmt.minimum in ("k32", "k16"):
                    record_min[p] = builder.fpext(_load(builder, f.halves, record_min_at, V_HALF), V_F32)
                    if fmt.factor != 1.0:
                        record_min[p] = builder.fmul(record_min[p], ir.Constant(V_F32, [fmt.factor] * L))
            def emit_block(block, block_fields, accs):
                """One 32-block: block_fields point at its codes and scales."""
                xs = [builder.gep(xq0, [builder.mul(block, ir.Constant(I64, 64))]) for xq0, _, _ in activations]
                for p, f in enumerate(block_fields):
                    codes = emit_codes(builder, byte_dot, f)
                    row_dots = byte_dot.block_dots(builder, codes, [
                        lambda plane, quad, x=x: _load(builder, x, 32 * plane + 4 * quad, I32) for x in xs])
                    for k, (xq0, xd0, xs0) in enumerate(activations):
                        dx = builder.load(builder.gep(xd0, [block]))
                        sums = [builder.load(builder.gep(xs0, [builder.add(builder.mul(block, ir.Constant(I64, 2)),
                                                                            ir.Constant(I64, h))])) for h in range(2)]
                        dots = row_dots[k]
                        halves = [(dots[0], sums[0], 0), (dots[1], sums[1], 1)]
                        if not fmt.per_16:
                            halves = [(builder.add(dots[0], dots[1]), builder.add(sums[0], sums[1]), 0)]
                        if fmt.scale == "f16":
                            accs[k, p] = emit_half_float_scales(builder, fma, f, halves[0], dx, accs[k, p])
                        else:
                            accs[k, p] = emit_scales(builder, fma, f, halves, dx, record_scale[p], record_min[p],
                                                     accs[k, p])
                return accs

            # a super-block's blocks as a loop, not unrolled: a short loop body lets the out-of-order core run ahead
            # into the next loads (an unrolled Q4_K record was ~1400 instructions, and Q4_K/Q6_K streamed at half
            # of Q4_0's GB/s: AVX2 one core 5.4/5.3 -> 8.9/9.6 GB/s, three-row matmul 79/55 -> 94/73 GFLOP/s).
            # Each block asks for its own lines ahead (a whole super-block's 37 at once overran the miss buffers).
            first_block = builder.mul(loop.index, ir.Constant(I64, fmt.record_blocks))
            prefetch_lines(w, fmt.record_blocks * fmt.block_stride, fmt.record_bytes)      # the record's scales
            with cgutils.for_range(builder, ir.Constant(I64, fmt.record_blocks)) as blocks:
                at = builder.mul(blocks.index, ir.Constant(I64, fmt.block_stride))
                prefetch_lines(builder.gep(w, [at]), 0, fmt.block_stride)
                block_fields = [SimpleNamespace(**{name: builder.gep(getattr(f, name), [at])
                                                   for name in ("codes", "bytes", "halves")}) for f in fields]
                accs = emit_block(builder.add(first_block, blocks.index), block_fields,
                                  {key: builder.load(total) for key, total in totals.items()})
                for key, total in totals.items():
                    builder.store(accs[key], total)
        masked_store = _intrinsic(module, f"llvm.masked.store.v{L}f32.p0", ir.VoidType(), V_F32, V_F32.as_pointer(),
                                  I32, ir.VectorType(ir.IntType(1), L))
        out_base = _data(context, builder, arg_types[7], out_)
        for p, part in enumerate(parts):
            first_row = builder.mul(part, ir.Constant(I64, L))
            valid = builder.trunc(builder.sub(n_valid_, first_row), I32)
            mask = builder.icmp_signed("<", ir.Constant(V_I32, list(range(L))), _splat(builder, valid, V_I32))
            for k in range(x_rows):
                at = builder.add(builder.add(out_at_, first_row), builder.mul(out_stride_, ir.Constant(I64, k)))
                destination = builder.bitcast(builder.gep(out_base, [at]), V_F32.as_pointer())
                builder.call(masked_store, [builder.load(totals[k, p]), destination, ir.Constant(I32, 4), mask])

    def emit(context, builder, arg_types, args, x_rows):
        """One x row (generation, memory-bound): every part in one pass, so that the weights stream once. Several
        x rows (prompts, compute-bound): one pass per part, so that the compiler cannot interleave the parts and
        run out of registers (AVX2's 16: a third of the values went to the stack, and loads bound the kernel); the
        later passes read the tile from the L1/L2 cache. Q4_0's three-row matmul: 71 -> 114 GFLOP/s on AVX2."""
        n_parts = LANES // L
        if n_parts == 1 or x_rows == 1:
            emit_parts(context, builder, arg_types, args, x_rows, [ir.Constant(I64, p) for p in range(n_parts)])
            return
        n_valid = args[9]
        used = builder.udiv(builder.add(n_valid, ir.Constant(I64, L - 1)), ir.Constant(I64, L))   # no padding rows
        with cgutils.for_range(builder, used) as part_loop:
            emit_parts(context, builder, arg_types, args, x_rows, [part_loop.index])
    return emit


def make_tile_dot(formats, path: KernelPath, x_rows=1):
    """An intrinsic tile_dot(kind, W, w_at, XQ, XD, XS, x_row, n_blocks, out, out_at, n_valid, out_stride):
    for k < x_rows and r < n_valid, out[out_at + k * out_stride + r] = row r of the tile at byte w_at of W
    times activation row x_row + k, with W in tile format formats[kind]. XQ int8 (rows, n_blocks, 2, 32)
    hi/lo planes, XD float32 (rows, n_blocks) scales, XS int32 (rows, n_blocks, 2) sums of q over each 16
    elements. Several x rows share each unpacked weight vector (prompt processing). One intrinsic serves
    every format (a switch on kind, outside the loops), so one driver does."""
    emitters = [_tile_dot_emitter(fmt, path) for fmt in formats]

    @intrinsic
    def tile_dot(typingctx, kind, W, w_at, XQ, XD, XS, x_row, n_blocks, out, out_at, n_valid, out_stride):
        sig = types.void(types.intp, W, types.intp, XQ, XD, XS, types.intp, types.intp, out, types.intp,
                         types.intp, types.intp)

        def codegen(context, builder, signature, args):
            done = builder.append_basic_block("tile_dot_done")
            switch = builder.switch(args[0], done)
            for index, emit in enumerate(emitters):
                case = builder.append_basic_block(f"tile_dot_{formats[index].name}")
                switch.add_case(ir.Constant(args[0].type, index), case)
                builder.position_at_end(case)
                emit(context, builder, signature.args[1:], args[1:], x_rows)
                builder.branch(done)
            builder.position_at_end(done)
            return context.get_dummy_value()
        return sig, codegen

    return tile_dot
