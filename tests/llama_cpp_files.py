"""Reference files that ship inside llama-cpp-python's source package on PyPI (its vendored llama.cpp, MIT):
the vocabulary-only GGUFs of models/ (with the token ids Hugging Face's tokenizers give their test strings),
the chat templates of models/templates/ and the GBNF grammars of grammars/. Fetched once with pip into the
nibble cache."""
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from runtime.registry import cache_dir

VERSION = "0.3.36"
VOCABULARIES = ("phi-3", "llama-spm", "qwen2", "bert-bge", "starcoder")
TEMPLATES = ("Qwen-Qwen3-0.6B", "microsoft-Phi-3.5-mini-instruct", "google-gemma-2-2b-it",
             "mistralai-Mistral-Nemo-Instruct-2407", "Qwen-Qwen2.5-7B-Instruct")
GRAMMARS = ("arithmetic", "c", "chess", "english", "japanese", "json", "json_arr", "list")


def _wanted(name):
    return (any(name.endswith(f"models/ggml-vocab-{v}.gguf{suffix}") for v in VOCABULARIES for suffix in ("", ".inp", ".out"))
            or any(name.endswith(f"models/templates/{t}.jinja") for t in TEMPLATES)
            or any(name.endswith(f"/llama.cpp/grammars/{g}.gbnf") for g in GRAMMARS))


def folder() -> Path:
    """The folder holding the files (models/ and models/templates/), downloaded and unpacked if missing."""
    out = cache_dir() / f"llama.cpp-{VERSION}-files"
    wanted = [out / "models" / f"ggml-vocab-{v}.gguf" for v in VOCABULARIES] + \
        [out / "models" / "templates" / f"{t}.jinja" for t in TEMPLATES] + \
        [out / "grammars" / f"{g}.gbnf" for g in GRAMMARS]
    if all(path.is_file() for path in wanted):
        return out
    with tempfile.TemporaryDirectory() as work:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={VERSION}", "-d", work], check=True)
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(next(Path(work).glob("*.tar.gz"))) as archive:
            for member in archive:
                if member.isfile() and _wanted(member.name):
                    relative = member.name.split("/vendor/llama.cpp/", 1)[1]
                    (partial / relative).parent.mkdir(parents=True, exist_ok=True)
                    (partial / relative).write_bytes(archive.extractfile(member).read())
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
    return out


def vocabulary(name) -> Path:
    return folder() / "models" / f"ggml-vocab-{name}.gguf"


def vocabulary_cases(name):
    """(text, Hugging Face's token ids without special tokens) for llama.cpp's test strings of a vocabulary."""
    path = vocabulary(name)
    texts = path.with_name(path.name + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    texts[-1] = texts[-1].removesuffix("\n__ggml_vocab_test__\n")
    ids = path.with_name(path.name + ".out").read_text(encoding="utf-8").split("\n")
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, ids)]


def grammar(name) -> str:
    return (folder() / "grammars" / f"{name}.gbnf").read_text(encoding="utf-8")


def template(name) -> str:
    return (folder() / "models" / "templates" / f"{name}.jinja").read_text(encoding="utf-8")
