"""Quantize a GGUF file to one of llama.cpp's mixes, as llama-quantize does.

TYPE is one of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L,
Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, MXFP4_MOE, and below 4 bits Q2_K_S,
IQ3_XS, IQ3_S, IQ3_M, IQ3_XXS, IQ2_M, IQ2_S, IQ2_XS, IQ2_XXS, IQ1_M, IQ1_S. The K mixes give
more bits to the tensors that suffer most (attn_v, ffn_down, the output matrix) with llama.cpp's
rules; 1-D tensors stay F32; rows that a 256-block does not divide fall back to a 32-block type.
With --imatrix FILE (from nibble imatrix or llama-imatrix) each tensor's rounding is weighted by the
importance of its columns, as llama-quantize --imatrix does (same bytes); IQ3_XXS, IQ2_*, IQ1_* and
Q2_K_S need one (without it their very-low-bit types give garbage, and llama-quantize refuses too).
Example with a matrix: nibble imatrix -m model-f16.gguf -f text.txt -o model.imatrix.gguf, then
nibble quantize --imatrix model.imatrix.gguf model-f16.gguf model-iq2_xxs.gguf IQ2_XXS
An already-quantized input is dequantized first (with a warning: quality is lost twice).
The output file appears only when complete.

Example: nibble quantize model-f16.gguf model-q4_k_m.gguf Q4_K_M"""
import sys

from tqdm import tqdm

from cpu_kernels import set_threads
from gguf_io import open_gguf
from runtime import resolve_model
from runtime.imatrix import read_imatrix
from runtime.quantize import (FLOAT_TYPES, MIXES, check_writable, filter_imatrix, mix_by_name, plan_types,
                              print_report, quantize_file, requantized_tensors, tensor_type_by_name)

HELP = "quantize a GGUF file (Q4_K_M, Q8_0, ...) like llama-quantize"


def setup_arg_parser(parser):
    parser.add_argument("input", metavar="IN", help="a .gguf file (F32/F16/BF16 is best) or a known model name")
    parser.add_argument("output", metavar="OUT", help="the .gguf file to write")
    parser.add_argument("type", metavar="TYPE", help=f"one of: {', '.join(MIXES)}")
    parser.add_argument("--pure", action="store_true",
                        help="every quantizable tensor gets TYPE's block type: no mix rules")
    parser.add_argument("--output-tensor-type", metavar="T", help="block type for output.weight (e.g. Q8_0)")
    parser.add_argument("--token-embedding-type", metavar="T", help="block type for token_embd.weight")
    parser.add_argument("--imatrix", metavar="FILE", help="importance matrix (nibble imatrix / llama-imatrix, GGUF or .dat)")
    parser.add_argument("--include-weights", metavar="P", action="append", default=[],
                        help="use the matrix only for tensors whose name contains P (repeatable)")
    parser.add_argument("--exclude-weights", metavar="P", action="append", default=[],
                        help="do not use the matrix for tensors whose name contains P (repeatable)")
    parser.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument("--dry-run", action="store_true", help="print each tensor's type and size; write nothing")


def main(args):
    mix = mix_by_name(args.type)
    source = str(resolve_model(args.input))
    output_type = tensor_type_by_name(args.output_tensor_type) if args.output_tensor_type else None
    embedding_type = tensor_type_by_name(args.token_embedding_type) if args.token_embedding_type else None
    set_threads(args.threads)
    imatrix = None
    if args.imatrix:
        imatrix = filter_imatrix(read_imatrix(args.imatrix), args.include_weights, args.exclude_weights)
    elif args.include_weights or args.exclude_weights:
        raise ValueError("--include-weights and --exclude-weights need --imatrix FILE")
    with open_gguf(source) as src:
        plan = plan_types(src, mix, pure=args.pure, output_tensor_type=output_type,
                          token_embedding_type=embedding_type, imatrix=bool(imatrix and imatrix.entries))
        total = sum(t.nbytes for t in src.tensors.values())
        if not args.dry_run:
            check_writable(plan, mix, imatrix)
        if args.dry_run:
            for name, qtype in plan.types.items():
                t = src.tensors[name]
                print(f"{name:40s} {str(list(t.shape)):>16s} {t.type.name:>7s} -> {qtype.name}")
            return 0
        requantized = requantized_tensors(src, plan)
    if requantized:
        again = "" if mix.default in FLOAT_TYPES else \
            " and quantized again, which loses quality twice (start from an F16/BF16/F32 file where you can)"
        print(f"warning: {len(requantized)} tensors of {source} are already quantized; they are dequantized{again}",
              file=sys.stderr)
    fallbacks = {}
    for name, wanted, given in plan.fallbacks:
        fallbacks.setdefault((wanted, given), []).append(name)
    for (wanted, given), names in fallbacks.items():
        which = names[0] if len(names) == 1 else f"{len(names)} tensors ({names[0]}, ...)"
        print(f"note: {which}: rows of {wanted.name} blocks do not fit; using {given.name}", file=sys.stderr)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"quantizing to {mix.name}", leave=False,
              disable=None) as bar:
        report = quantize_file(source, args.output, mix, pure=args.pure, output_tensor_type=output_type,
                               token_embedding_type=embedding_type, imatrix=imatrix, imatrix_path=args.imatrix,
                               progress=bar.update)
    print_report(report, mix, args.output)
    return 0
