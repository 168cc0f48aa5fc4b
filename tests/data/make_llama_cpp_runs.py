"""Records what llama.cpp generates from files nibble wrote, for tests/test_llama_cpp_runs.py.

Files: the real models dequantized to F16 and quantized by `nibble quantize` to several mixes, and
the transformers exports converted back by `nibble convert`. For each: a digest of its tensors and
metadata (so the test knows it rebuilt the same file) and llama.cpp's greedy 24 tokens on the golden
prompts. Run once where llama-cpp-python and transformers (with torch) are installed:
    python tests/data/make_llama_cpp_runs.py [WORK_DIR]
"""
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))
from hf_models import export_gguf_to_hf  # noqa: E402

from gguf_io import open_gguf  # noqa: E402
from runtime import resolve_model  # noqa: E402
from runtime.convert import convert  # noqa: E402
from runtime.quantize import quantize_file  # noqa: E402

MODELS = {"smollm2-135m-instruct": "logits-smollm2-135m-q4_1.json", "gemma3-270m": "logits-gemma3-270m-q4_k_m.json"}
MIXES = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "IQ4_XS", "Q3_K_M")
CONVERTED = ("f16", "q8_0")
OUT = Path(__file__).parent / "llama-cpp-runs.json"
N_GREEDY = 24


def file_digest(path):
    """sha256 over the metadata (keys, types, values) and the tensors, independent of their order."""
    import hashlib
    digest = hashlib.sha256()
    with open_gguf(path) as f:
        for key in sorted(f.metadata):
            value = f.metadata[key]
            text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
            digest.update(f"{key}:{f.metadata_types[key]}:{text}".encode())
        for name in sorted(f.tensors):
            digest.update(f"{name}:{f.tensors[name].type.name}:".encode())
            digest.update(f.tensors[name].raw)
    return digest.hexdigest()


def llama_cpp_greedy(path, prompts):
    from llama_cpp import Llama
    llm = Llama(str(path), n_ctx=128, n_threads=2, logits_all=True, verbose=False)
    runs = []
    for tokens in prompts:
        llm.reset()
        llm.eval(tokens)
        out = []
        while len(out) < N_GREEDY:
            out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([out[-1]])
        runs.append(out)
    return runs


LABELS = [f"quantize {mix}" for mix in MIXES] + [f"convert {outtype}" for outtype in CONVERTED]


def build_file(label, model, work, base, hf_folder):
    """Build the file `label` names ("quantize Q4_K_M", "convert f16") with nibble; returns its path."""
    kind, kind_type = label.split()
    path = work / f"{model}-{kind}-{kind_type}.gguf"
    if kind == "quantize":
        quantize_file(base, path, kind_type)
    else:
        convert(hf_folder, path, kind_type)
    return path


def main():
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    runs = {}
    for model, golden in MODELS.items():
        prompts = [c["tokens"] for c in json.loads((Path(__file__).parent / golden).read_text())["cases"]]
        base = work / f"{model}-F16-base.gguf"
        quantize_file(resolve_model(model), base, "F16")
        hf_folder = export_gguf_to_hf(resolve_model(model), work / f"{model}-hf")
        runs[model] = {}
        for label in LABELS:
            path = build_file(label, model, work, base, hf_folder)
            runs[model][label] = {"digest": file_digest(path), "llama_cpp_greedy": llama_cpp_greedy(path, prompts)}
        print(model, "done", file=sys.stderr)
    OUT.write_text(json.dumps({"made_by": "llama-cpp-python 0.3.36 (n_ctx 128, greedy by argmax of its logits)",
                               "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
