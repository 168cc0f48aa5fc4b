"""Cuts tests/data/iquant-excerpts.gguf: the first rows of one tensor of each grid i-quant and ternary type,
as llama-quantize (llama.cpp as llama-cpp-python 0.3.36 vendors it) wrote them from the real models' F16
with an importance matrix from llama-imatrix. The files themselves are too large to ship; these real blocks
let tests/test_formats.py and tests/test_kernels.py check nibble's dequantizers and kernels on them.

    python tests/data/make_iquant_excerpts.py WORK_DIR

WORK_DIR holds <model>-<MIX>.gguf for the mixes below (llama-quantize --imatrix <model>.imatrix.gguf
<model>-f16.gguf <model>-<MIX>.gguf <MIX>, the matrix from llama-imatrix -c 512 --chunks 16 over the first
120000 bytes of benchmarks/data/python-language-reference.txt).
"""
import sys
from pathlib import Path

from gguf import GGMLQuantizationType as T

from gguf_io import GGUFWriter, open_gguf

MODELS = ("smollm2-135m-instruct", "gemma3-270m")
MIXES = ("IQ2_XXS", "IQ2_XS", "IQ2_M", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0")
WANTED = {T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M, T.TQ1_0, T.TQ2_0}
ROWS = 48
OUT = Path(__file__).parent / "iquant-excerpts.gguf"


def main():
    work = Path(sys.argv[1])
    seen = set()
    with GGUFWriter(OUT) as out:
        out.add_metadata("excerpts.source", "llama-quantize --imatrix, llama.cpp of llama-cpp-python 0.3.36")
        parts = []
        for model in MODELS:
            for mix in MIXES:
                with open_gguf(work / f"{model}-{mix}.gguf") as f:
                    for tensor in f.tensors.values():
                        if tensor.type in WANTED and (model, tensor.type) not in seen:
                            seen.add((model, tensor.type))
                            rows = tensor.raw.reshape(tensor.shape[0], -1)[:ROWS].copy()
                            name = f"{model}/{mix}/{tensor.name}"
                            out.add_tensor(name, (ROWS, tensor.shape[1]), tensor.type)
                            parts.append((name, rows))
        for name, rows in parts:
            out.write_tensor(name, rows)
    print(OUT, len(parts), "tensors", OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
