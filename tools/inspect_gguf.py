"""Show a GGUF file's metadata, its tensors and totals.

MODEL is a .gguf path or a known model name (pulled if missing). Long arrays are
summarized; --json prints the same for machines. --system shows what runs the kernels here instead."""
import json
import os
import sys
from collections import Counter

import numpy as np

from gguf_io import open_gguf
from runtime import resolve_model

HELP = "show a GGUF file's metadata and tensors"
ARRAY_PREVIEW = 8
STRING_PREVIEW = 120


def setup_arg_parser(parser):
    parser.add_argument("model", metavar="MODEL", nargs="?", help="a .gguf path or a known model name")
    parser.add_argument("--system", action="store_true",
                        help="show this CPU, the kernel path chosen for it (NIBBLE_KERNELS picks another) and threads")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--no-tensors", action="store_true", help="leave out the tensor table")


def _type_name(vtype):
    return f"[{vtype[1].name}]" if isinstance(vtype, tuple) else vtype.name


def _plain(value):
    """A JSON-able version of a metadata value, with long arrays summarized."""
    if isinstance(value, (list, np.ndarray)):
        items = value.tolist() if isinstance(value, np.ndarray) else value
        if len(items) <= ARRAY_PREVIEW:
            return items
        return {"length": len(items), "first": items[:ARRAY_PREVIEW]}
    return value


def _text(value):
    if isinstance(value, (list, np.ndarray)):
        items = value.tolist() if isinstance(value, np.ndarray) else value
        head = ", ".join(repr(v) for v in items[:ARRAY_PREVIEW])
        more = f", ... ({len(items)} items)" if len(items) > ARRAY_PREVIEW else ""
        return f"[{head}{more}]"
    if isinstance(value, str):
        shown = value if len(value) <= STRING_PREVIEW else value[:STRING_PREVIEW] + f"... ({len(value)} chars)"
        return repr(shown)
    return repr(value)


def summary(gf):
    tensors = list(gf.tensors.values())
    n_params = sum(t.n_elements for t in tensors)
    n_bytes = sum(t.nbytes for t in tensors)
    return {
        "path": os.path.abspath(gf.path),
        "file_bytes": gf.file_size,
        "gguf_version": gf.version,
        "alignment": gf.alignment,
        "architecture": gf.architecture,
        "n_tensors": len(tensors),
        "n_parameters": n_params,
        "tensor_bytes": n_bytes,
        "bits_per_weight": round(8 * n_bytes / n_params, 3) if n_params else None,
        "tensor_types": dict(Counter(t.type.name for t in tensors).most_common()),
    }


def system_info():
    import cpu_kernels
    import llvmlite.binding as llvm
    import numba
    from cpu_kernels import isa
    path = isa.KERNEL_PATH
    return dict(cpu=llvm.get_host_cpu_name(), compiled_for=numba.config.CPU_NAME or "this CPU",
                kernel_path=path.name, kernel_instructions=path.describe,
                paths_this_cpu_runs=[name for name, p in isa.PATHS.items() if isa.runs_here(p)],
                threads=numba.config.NUMBA_NUM_THREADS, kernel_cache=str(cpu_kernels.KERNEL_CACHE_DIR))


def main(args):
    if args.system:
        info = system_info()
        if args.json:
            json.dump(info, sys.stdout, indent=1)
            print()
        else:
            width = max(map(len, info))
            for key, value in info.items():
                print(f"{key.replace('_', ' '):{width}s}  {', '.join(value) if isinstance(value, list) else value}")
        return 0
    if not args.model:
        print("nibble inspect: give a MODEL (a .gguf path or a known model name), or --system", file=sys.stderr)
        return 2
    path = resolve_model(args.model)
    with open_gguf(path) as gf:
        info = summary(gf)
        if args.json:
            info["metadata"] = {key: {"type": _type_name(gf.metadata_types[key]), "value": _plain(value)}
                                for key, value in gf.metadata.items()}
            if not args.no_tensors:
                info["tensors"] = [{"name": t.name, "type": t.type.name, "shape": list(t.shape),
                                    "bytes": t.nbytes, "offset": t.offset} for t in gf.tensors.values()]
            json.dump(info, sys.stdout, indent=1, ensure_ascii=False)
            print()
            return 0
        print(f"{info['path']}: GGUF v{gf.version}, {info['file_bytes']:,} bytes, "
              f"architecture {info['architecture']}")
        print(f"\nmetadata ({len(gf.metadata)} keys)")
        width = max((len(k) for k in gf.metadata), default=0)
        for key, value in gf.metadata.items():
            print(f"  {key:{width}s}  {_type_name(gf.metadata_types[key]):9s}  {_text(value)}")
        if not args.no_tensors and gf.tensors:
            print(f"\ntensors ({len(gf.tensors)})")
            name_width = max(len(n) for n in gf.tensors)
            for t in gf.tensors.values():
                shape = " x ".join(str(d) for d in t.shape)
                print(f"  {t.name:{name_width}s}  {t.type.name:7s}  {shape:>16s}  {t.nbytes:>13,d}")
        types = ", ".join(f"{n} {name}" for name, n in info["tensor_types"].items())
        print(f"\ntotal: {info['n_tensors']} tensors ({types}), {info['n_parameters']:,} parameters, "
              f"{info['tensor_bytes']:,} bytes, {info['bits_per_weight']} bits per weight")
    return 0
