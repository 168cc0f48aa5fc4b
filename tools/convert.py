"""Convert a Hugging Face model folder to GGUF, as llama.cpp's convert_hf_to_gguf.py does.

The folder holds config.json, the weights as *.safetensors (one file, or shards with
model.safetensors.index.json) and the tokenizer (tokenizer.json or tokenizer.model, with
tokenizer_config.json). Architectures: LlamaForCausalLM, Gemma3ForCausalLM, Qwen2ForCausalLM.
Pickle checkpoints (*.bin, *.pt) are refused: loading one can run arbitrary code.

--outtype is f32, f16 (default), bf16, q8_0, or any `nibble quantize` TYPE (Q4_K_M, ...),
which converts to f32 first and then quantizes with llama.cpp's rules.

Example: nibble convert ./SmolLM2-135M-Instruct -o smollm2-f16.gguf"""
import sys
from pathlib import Path

from tqdm import tqdm

from runtime.convert import OUTTYPES, convert
from runtime.quantize import MIXES

HELP = "convert a Hugging Face model folder (safetensors) to GGUF"


def setup_arg_parser(parser):
    parser.add_argument("folder", metavar="HF_DIR", help="a Hugging Face model folder")
    parser.add_argument("-o", "--outfile", required=True, metavar="OUT.gguf", help="the .gguf file to write")
    parser.add_argument("--outtype", default="f16", metavar="TYPE",
                        help=f"{', '.join(OUTTYPES)} or a quantize TYPE ({', '.join(MIXES)}); default f16")


def main(args):
    folder = Path(args.folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; give the Hugging Face model folder (with config.json)")
    total = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    with tqdm(total=total, unit="B", unit_scale=True, desc="converting", leave=False, disable=None) as bar:
        report = convert(folder, args.outfile, args.outtype, progress=bar.update)
    print(f"{report.architecture}: {report.n_tensors} tensors, {report.n_elements / 1e6:.1f} M weights -> "
          f"{args.outfile} ({args.outtype})", file=sys.stderr)
    return 0
