"""Integer dot products of 16-row weight tiles with 15-bit activations, written as LLVM IR.

Numba has no vector types and LLVM does not find VPDPBUSD (AVX-512 VNNI: 64 unsigned-byte x
signed-byte products summed into 16 int32 lanes per instruction) in scalar loops, so each
format's inner loop is emitted here directly, as an intrinsic the drivers in tiles.py call.

Tile layout (tiles.py writes it): 16 consecutive weight rows, one 32-element block after another.
For each block, the codes as 64-byte vectors: byte 4*r + t of vector k is row r's code for element
4k + t (8-bit codes: 8 vectors), or element 4k + t in the low nibble and 16 + 4k + t in the high
nibble (4-bit codes: 4 vectors). Then the block's per-row scales (and mins). One VPDPBUSD takes a
vector and 4 activation bytes broadcast to every row: the 16 rows' partial sums stay in one
register, with no horizontal sums.

Activations are not float32 here: each 32-element block is x = dx * q with q a 15-bit integer
(|q| <= 16383), split as q = 128 * hi + lo (hi signed, 0 <= lo < 128) so that both halves are
signed bytes; every code meets both, so a block costs two VPDPBUSD per vector. The rounding is
amax / 32766 per block (llama.cpp rounds to amax / 254, Q8_0/Q8_K): nibble's logits stay within
float-reference noise (tests/test_fidelity.py).
"""
from dataclasses import dataclass
from typing import Optional

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

I8, I32, I64, F32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
LANES = 16
V_BYTES, V_I32, V_F32 = ir.VectorType(I8, 64), ir.VectorType(I32, LANES), ir.VectorType(F32, LANES)
V_U8_16, V_HALF = ir.VectorType(I8, LANES), ir.VectorType(ir.HalfType(), LANES)
X_PLANES = 2          # activation bytes per element: hi and lo
HI_SHIFT = 7


@dataclass(frozen=True)
class TileFormat:
    """How a format's tile records read. value = scale * (code - offset) + min_sign * min.

    scale / min kinds: "f16" one half float per 32-block and row; "f32x2" one float32 per 16 elements
    and row; "k" a 6-bit integer per 32-block and row times a half float per record and row (Q4_K)."""
    name: str
    code_bits: int                  # 4 or 8
    offset: int                     # integer subtracted from every code
    scale: str
    minimum: Optional[str] = None
    min_sign: int = 1
    record_blocks: int = 1          # 32-blocks per record (8 for 256-element super-blocks)

    @property
    def code_bytes(self):
        return LANES * 32 * self.code_bits // 8

    def _field_bytes(self, kind):
        return {None: 0, "f16": 2 * LANES, "f32x2": 8 * LANES, "k": LANES}[kind]

    @property
    def record_bytes(self):
        per_block = self.code_bytes + self._field_bytes(self.scale) + self._field_bytes(self.minimum)
        per_record = 2 * LANES * (self.scale == "k") + 2 * LANES * (self.minimum == "k")
        return self.record_blocks * per_block + per_record

    def field_offsets(self):
        """Byte offsets inside a record: codes of block j, scales, mins, record scale, record min."""
        codes = self.record_blocks * self.code_bytes
        scales = codes
        mins = scales + self.record_blocks * self._field_bytes(self.scale)
        record_scale = mins + self.record_blocks * self._field_bytes(self.minimum)
        record_min = record_scale + 2 * LANES * (self.scale == "k")
        return scales, mins, record_scale, record_min


def _splat(builder, value, vector_type):
    undef = ir.Constant(vector_type, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(I32, vector_type.count), None))


def _load(builder, base, offset, pointee):
    address = builder.gep(base, [offset if isinstance(offset, ir.Value) else ir.Constant(I64, offset)])
    return builder.load(builder.bitcast(address, pointee.as_pointer()), align=1)


def _data(context, builder, array_type, array):
    return cgutils.create_struct_proxy(array_type)(context, builder, value=array).data


def make_tile_dot(fmt: TileFormat):
    """An intrinsic tile_dot(W, w_at, XQ, XD, XS, x_row, n_blocks, out, out_at, n_valid): out[out_at + r]
    = row r of the tile at byte w_at of W times activation row x_row, for r < n_valid.
    XQ int8 (rows, n_blocks, 2, 32) hi/lo planes, XD float32 (rows, n_blocks) scales, XS int32
    (rows, n_blocks, 2) sums of q over each 16 elements."""
    scales_at, mins_at, record_scale_at, record_min_at = fmt.field_offsets()
    step = 4 if fmt.code_bits == 4 else 8

    def emit_block(builder, dpbusd, w, x, j):
        """The two 16-element halves' integer dot products (hi and lo planes combined) of block j."""
        acc = [[ir.Constant(V_I32, None)] * X_PLANES for _ in range(2)]
        codes = j * fmt.code_bytes
        low_mask, four = ir.Constant(V_BYTES, [15] * 64), ir.Constant(V_BYTES, [4] * 64)
        for k in range(step):
            v = _load(builder, w, codes + 64 * k, V_BYTES)
            if fmt.code_bits == 4:
                parts = [(0, builder.and_(v, low_mask), 4 * k), (1, builder.lshr(v, four), 16 + 4 * k)]
            else:
                parts = [(k // 4, v, 4 * k)]
            for half, vector, element in parts:
                for plane in range(X_PLANES):
                    xq = _splat(builder, _load(builder, x, 32 * plane + element, I32), V_I32)
                    acc[half][plane] = builder.call(dpbusd, [acc[half][plane], builder.bitcast(vector, V_I32), xq])
        shift = ir.Constant(V_I32, [HI_SHIFT] * LANES)
        return [builder.add(builder.shl(hi, shift), lo) for hi, lo in acc]

    def emit_field(builder, w, kind, at, j, half, record_value):
        """16 per-row floats of a scale or min field for block j (and half, for per-16 fields)."""
        if kind == "f16":
            return builder.fpext(_load(builder, w, at + 2 * LANES * j, V_HALF), V_F32)
        if kind == "f32x2":
            return _load(builder, w, at + 4 * LANES * (2 * j + half), V_F32)
        small = builder.uitofp(_load(builder, w, at + LANES * j, V_U8_16), V_F32)
        return builder.fmul(record_value, small)

    @intrinsic
    def tile_dot(typingctx, W, w_at, XQ, XD, XS, x_row, n_blocks, out, out_at, n_valid):
        sig = types.void(W, types.intp, XQ, XD, XS, types.intp, types.intp, out, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            W_, w_at_, XQ_, XD_, XS_, x_row_, n_blocks_, out_, out_at_, n_valid_ = args
            arg_types = signature.args
            module = builder.module
            dpbusd = cgutils.get_or_insert_function(
                module, ir.FunctionType(V_I32, [V_I32, V_I32, V_I32]), "llvm.x86.avx512.vpdpbusd.512")
            fma = cgutils.get_or_insert_function(module, ir.FunctionType(V_F32, [V_F32] * 3), "llvm.fma.v16f32")
            w0 = builder.gep(_data(context, builder, arg_types[0], W_), [w_at_])
            first = builder.mul(x_row_, n_blocks_)
            xq0 = builder.gep(_data(context, builder, arg_types[2], XQ_), [builder.mul(first, ir.Constant(I64, 64))])
            xd0 = builder.gep(_data(context, builder, arg_types[3], XD_), [first])
            xs0 = builder.gep(_data(context, builder, arg_types[4], XS_), [builder.mul(first, ir.Constant(I64, 2))])
            total = cgutils.alloca_once_value(builder, ir.Constant(V_F32, None))
            n_records = builder.udiv(n_blocks_, ir.Constant(I64, fmt.record_blocks))
            with cgutils.for_range(builder, n_records) as loop:
                w = builder.gep(w0, [builder.mul(loop.index, ir.Constant(I64, fmt.record_bytes))])
                record_scale = record_min = None
                if fmt.scale == "k":
                    record_scale = builder.fpext(_load(builder, w, record_scale_at, V_HALF), V_F32)
                if fmt.minimum == "k":
                    record_min = builder.fpext(_load(builder, w, record_min_at, V_HALF), V_F32)
                acc = builder.load(total)
                for j in range(fmt.record_blocks):
                    block = builder.add(builder.mul(loop.index, ir.Constant(I64, fmt.record_blocks)), ir.Constant(I64, j))
                    x = builder.gep(xq0, [builder.mul(block, ir.Constant(I64, 64))])
                    dx = builder.load(builder.gep(xd0, [block]))
                    sums = [builder.load(builder.gep(xs0, [builder.add(builder.mul(block, ir.Constant(I64, 2)),
                                                                        ir.Constant(I64, h))])) for h in range(2)]
                    dots = emit_block(builder, dpbusd, w, x, j)
                    halves = [(dots[0], sums[0], 0), (dots[1], sums[1], 1)]
                    if fmt.scale != "f32x2":
                        halves = [(builder.add(dots[0], dots[1]), builder.add(sums[0], sums[1]), 0)]
                    for dot, xsum, half in halves:
                        if fmt.offset:
                            dot = builder.sub(dot, _splat(builder, builder.mul(xsum, ir.Constant(I32, fmt.offset)), V_I32))
                        scale = emit_field(builder, w, fmt.scale, scales_at, j, half, record_scale)
                        acc = builder.call(fma, [builder.sitofp(dot, V_F32), builder.fmul(scale, _splat(builder, dx, V_F32)), acc])
                        if fmt.minimum:
                            minimum = emit_field(builder, w, fmt.minimum, mins_at, j, half, record_min)
                            x_total = builder.fmul(dx, builder.sitofp(xsum, F32))
                            if fmt.min_sign < 0:
                                x_total = builder.fneg(x_total)
                            acc = builder.call(fma, [minimum, _splat(builder, x_total, V_F32), acc])
                builder.store(acc, total)
            lanes = ir.Constant(V_I32, list(range(LANES)))
            mask = builder.icmp_signed("<", lanes, _splat(builder, builder.trunc(n_valid_, I32), V_I32))
            masked_store = cgutils.get_or_insert_function(
                module, ir.FunctionType(ir.VoidType(), [V_F32, V_F32.as_pointer(), I32, ir.VectorType(ir.IntType(1), LANES)]),
                "llvm.masked.store.v16f32.p0")
            destination = builder.gep(_data(context, builder, arg_types[7], out_), [out_at_])
            builder.call(masked_store, [builder.load(total), builder.bitcast(destination, V_F32.as_pointer()),
                                        ir.Constant(I32, 4), mask])
            return context.get_dummy_value()
        return sig, codegen

    return tile_dot
