"""GGUF blocks of random bytes, for the formats nibble reads but does not write: every code, sign and small
scale pattern occurs, and the half-float scale is a finite number (NaN and infinite scales are not what
files hold)."""
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

HALF_SCALE_AT = {T.TQ1_0: 52, T.TQ2_0: 64, T.MXFP4: None, T.NVFP4: None}   # others: d at byte 0; IQ1_M below


def random_blocks(qtype, n_blocks, rng):
    """(n_blocks, bytes per block) uint8."""
    size = GGML_QUANT_SIZES[qtype][1]
    blocks = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    d = (rng.uniform(-1, 1, n_blocks) * 10.0 ** rng.uniform(-7, 2, n_blocks)).astype(np.float16).view(np.uint16)
    if qtype == T.IQ1_M:          # the scale's four nibbles are the top nibbles of the four 16-bit scale words
        for w in range(4):
            blocks[:, 49 + 2 * w] = (blocks[:, 49 + 2 * w] & 0x0F) | (((d >> (4 * w)) & 15) << 4).astype(np.uint8)
    elif HALF_SCALE_AT.get(qtype, 0) is not None:
        at = HALF_SCALE_AT.get(qtype, 0)
        blocks[:, at:at + 2] = d.view(np.uint8).reshape(-1, 2)
    return blocks


def random_weight(qtype, rows, cols, rng):
    """A rows x cols weight of random blocks, as its GGUF bytes (rows, row bytes)."""
    block_size = GGML_QUANT_SIZES[qtype][0]
    return random_blocks(qtype, rows * cols // block_size, rng).reshape(rows, -1)
