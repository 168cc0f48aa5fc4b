"""Records llama-quantize's tensor types and output for every mix, for tests/test_quantize.py.

The sources are the real models dequantized to F16 by nibble (`nibble quantize IN OUT F16`).
Run once where llama-cpp-python is installed (it is not a nibble dependency), or with LLAMA_QUANTIZE naming a
llama-quantize binary (benchmarks/build_llama_cpp.sh builds one):
    python tests/data/make_quantize_cases.py [WORK_DIR] [MIX ...]
Naming mixes records (or re-records) only those, keeping the others. With LLAMA_IMATRIX=1 the named mixes
are recorded as llama-quantize --imatrix writes them with tests/data/imatrix-<model>-llama.cpp.gguf
(llama-imatrix's matrices, see tests/test_imatrix.py): under "imatrix_mixes" the types and digest, and under
"imatrix_tensors" the sha256 of each tensor of a type nibble has a weighted quantizer for (WEIGHTED).
"""
import ctypes
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from gguf import LlamaFileType

from gguf_io import open_gguf
from runtime import resolve_model
from runtime.quantize import MIXES, quantize_file

MODELS = ("smollm2-135m-instruct", "gemma3-270m")
OUT = Path(__file__).parent / "quantize-mixes.json"
WEIGHTED = ("IQ2_XXS", "IQ2_XS")


def tensor_digest(gguf_file):
    """sha256 over every tensor's name, type and bytes, in name order (llama-quantize reorders them)."""
    digest = hashlib.sha256()
    for name in sorted(gguf_file.tensors):
        tensor = gguf_file.tensors[name]
        digest.update(f"{name}:{tensor.type.name}:".encode())
        digest.update(tensor.raw)
    return digest.hexdigest()


def llama_quantize(source, destination, mix, imatrix=None):
    if os.environ.get("LLAMA_QUANTIZE"):
        with_matrix = ["--imatrix", str(imatrix)] if imatrix else []
        subprocess.run([os.environ["LLAMA_QUANTIZE"], *with_matrix, str(source), str(destination), mix, "2"],
                       check=True, capture_output=True)
        return
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = 2
    params.ftype = int(LlamaFileType.ALL_F32 if mix == "F32" else LlamaFileType["MOSTLY_" + mix])
    if llama_cpp.llama_model_quantize(str(source).encode(), str(destination).encode(), ctypes.byref(params)):
        raise RuntimeError(f"llama-quantize failed for {mix}")


def main():
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    only = sys.argv[2:]
    cases = json.loads(OUT.read_text()) if only else {}
    for model in MODELS:
        base = work / f"{model}-f16.gguf"
        quantize_file(resolve_model(model), base, "F16")
        with open_gguf(base) as f:
            names = list(f.tensors)
            case = {"base_digest": tensor_digest(f), "tensors": names, "mixes": {}}
        if only:
            assert cases[model]["base_digest"] == case["base_digest"], model
            case = {**cases[model], **case, "mixes": cases[model]["mixes"]}
        imatrix = OUT.parent / f"imatrix-{model}-llama.cpp.gguf" if os.environ.get("LLAMA_IMATRIX") else None
        if imatrix:
            case["imatrix_mixes"] = cases[model].get("imatrix_mixes", {})
            case["imatrix_tensors"] = cases[model].get("imatrix_tensors", {})
        for mix in only or MIXES:
            out = work / f"{model}-llama.cpp-{mix}.gguf"
            llama_quantize(base, out, mix, imatrix)
            with open_gguf(out) as f:
                types = " ".join(f.tensors[n].type.name for n in names)
                if imatrix:
                    case["imatrix_mixes"][mix] = {"types": types, "digest": tensor_digest(f)}
                    case["imatrix_tensors"][mix] = {n: hashlib.sha256(f.tensors[n].raw).hexdigest() for n in names
                                                    if f.tensors[n].type.name in WEIGHTED}
                else:
                    case["mixes"][mix] = {"types": types, "digest": tensor_digest(f)}
            print(model, mix, file=sys.stderr)
        cases[model] = case
    OUT.write_text(json.dumps(cases, indent=1) + "\n")


if __name__ == "__main__":
    main()
