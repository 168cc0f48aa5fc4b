"""Convert a Hugging Face model folder to GGUF (`nibble convert`), as llama.cpp's convert_hf_to_gguf.py does.

Reads config.json, *.safetensors (one file or shards with model.safetensors.index.json),
tokenizer.json or tokenizer.model, tokenizer_config.json and chat_template.jinja; writes the
metadata keys llama.cpp's converter writes and the tensors under their GGUF names, one at a
time, through the block quantizers in gguf_io. The file appears only when complete.
"""
import json
import math
import mmap
import os
import tempfile
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Callable

import numpy as np
from gguf import MODEL_ARCH, GGMLQuantizationType as T, GGUFValueType as V, LlamaFileType as FT, PoolingType, TokenType
from gguf import get_tensor_name_map

from gguf_io import GGUFWriter, drop_mapped_pages, quantize

GGML_QNT_VERSION = 2
PART_ELEMENTS = 1 << 22           # convert ~4M weights at a time


class ConvertError(ValueError):
    """A model folder nibble cannot convert; the message names the file and what to do."""


# --- safetensors: an 8-byte header length, a JSON header, then raw little-endian tensors ----------

SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
                      "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


@dataclass
class SafeTensor:
    name: str
    dtype: str
    shape: tuple
    data: np.ndarray      # zero-copy view of the mapped file (BF16 as uint16)
    file: "SafeTensorsFile"
    offset: int = 0       # of data in the file

    def to_float32(self):
        if self.dtype == "BF16":
            return (self.data.astype(np.uint32) << 16).view(np.float32).reshape(self.shape)
        return self.data.astype(np.float32).reshape(self.shape)


class SafeTensorsFile:
    """One .safetensors file, mapped; gguf-py and the `safetensors` package cannot give BF16 to numpy."""

    def __init__(self, path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            (header_len,) = np.frombuffer(self._map, np.uint64, 1)
            header = json.loads(bytes(self._map[8:8 + int(header_len)]))
        except (ValueError, TypeError) as e:
            raise ConvertError(f"{self.path}: not a safetensors file ({e})") from None
        base = 8 + int(header_len)
        self.tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = info["dtype"]
            if dtype not in SAFETENSORS_DTYPES:
                raise ConvertError(f"{self.path}: tensor {name} has dtype {dtype}, which nibble cannot convert")
            start, end = info["data_offsets"]
            np_dtype = SAFETENSORS_DTYPES[dtype]
            data = np.frombuffer(self._map, np_dtype, (end - start) // np.dtype(np_dtype).itemsize, base + start)
            self.tensors[name] = SafeTensor(name, dtype, tuple(info["shape"]), data, self, base + start)

    def drop_resident_pages(self, offset, length):
        """Let the OS reclaim the pages of bytes offset..offset+length once they are converted."""
        drop_mapped_pages(self._map, offset, length)


def open_checkpoint(folder) -> dict:
    """name -> SafeTensor over every shard; pickle checkpoints are refused (loading one runs code)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        shards = sorted(p.name for p in folder.glob("*.safetensors"))
    if not shards:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if pickles:
            raise ConvertError(f"{folder}: only pickle checkpoints ({', '.join(pickles)}); nibble reads safetensors "
                               "only, because loading a pickle can run arbitrary code. Save the model with "
                               "save_pretrained(..., safe_serialization=True) first")
        raise ConvertError(f"{folder}: no *.safetensors files; is this a Hugging Face model folder?")
    tensors = {}
    for shard in shards:
        if not (folder / shard).is_file():
            raise ConvertError(f"{folder / shard}: shard listed in the index is missing")
        tensors.update(SafeTensorsFile(folder / shard).tensors)
    return tensors


# --- the vocabulary -----------------------------------------------------------------------------

# llama.cpp's converter names a BPE pre-tokenizer by hashing the ids its tokenizer gives this text.
CHECK_TEXT = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f "
              "(multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 "
              "33333333 3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2"
              "\u17b6\u1785\U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
              "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 "
              "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure "
              "I'll make it, 'D you like some tea? We'Ve a'lL")

# chkhsh -> tokenizer.ggml.pre, from convert_hf_to_gguf.py's get_vocab_base_pre (the families nibble runs).
PRE_TOKENIZER_HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "8aeee3860c56296a157a1fe2fad249ec40aa59b1bb5709f4ade11c4e6fe652ed": "falcon",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "mpt",
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",
    "9c2227e4dd922002fb81bde4fc02b0483ca4f12911410dee2255e4987644e3f8": "command-r",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
    "a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e": "dbrx",
    "c7699093ba4255a91e702aa38a596aa81669f3525dae06c2953267dde580f448": "jina-v1-en",
    "171aeeedd6fb548d418a7461d053f11b6f1f1fc9b387bd66640d28a4b9f5c643": "jina-v2-es",
    "27949a2493fc4a9f53f5b9b029c82689cfbe5d3a1929bb25e043089e28466de6": "jina-v2-de",
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "c7ea5862a53e4272c035c8238367063e2b270d51faa48c0f09e9d5b54746c360": "poro-chat",
    "7967bfa498ade6b757b064f31e964dddbb80f8f9a4d68d4ba7998fcf281c531a": "jina-v2-code",
    "7fc505bd3104ca1083b150b17d088b59534ede9bde81f0dd2090967d7fe52cee": "viking",
    "b53802fb28e26d645c3a310b34bfe07da813026ec7c7716883404d5e0f8b1901": "jais",
    "7b3e7548e4308f52a76e8229e4e6cc831195d0d1df43aed21ac6c93da05fec5f": "codeshell",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "3c30d3ad1d6b64202cd222813e7736c2db6e1bd6d67197090fc1211fbc612ae7": "bloom",
    "bc01ce58980e1db43859146dc51b1758b3b88729b217a74792e9f8d43e479d21": "gpt3-finnish",
    "4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae": "exaone",
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",
    "8b5a93ed704057481f240da0be7e7dca721d7f8f4755263b6807227a2cbeae65": "roberta-bpe",
    "ad851be1dba641f2e3711822f816db2c265f788b37c63b4e1aeacb9ee92de8eb": "gigachat",
    "d4c8f286ea6b520b3d495c4455483cfa2302c0cfcd4be05d781b6a8a0a7cdaf1": "megrez",
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "1431a23e583c97432bc230bff598d103ddb5a1f89960c8f1d1051aaa944d0b35": "minerva-7b",
    "b6e8e1518dc4305be2fe39c313ed643381c4da5db34a98f6a04c093f8afbe99b": "chatglm-bpe",
    "81d72c7348a9f0ebe86f23298d37debe0a5e71149e29bd283904c02262b27516": "chatglm-bpe",
    # WordPiece (BERT) vocabularies: llama.cpp's WPM ignores the name; bert-base-uncased's hash is listed twice
    # in get_vocab_base_pre, and the later entry wins
    "0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f": "jina-v2-en",
    "8e62295832751ca1e8f92f2226f403dea30dc5165e448b5bfa05af5340c64ec7": "bert-bge-large",
}


def looks_special(text):
    """convert_hf_to_gguf's does_token_look_special: added tokens some models forget to mark special."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>"))
            or (text.startswith("<start_of_") and text.endswith(">"))
            or (text.startswith("<end_of_") and text.endswith(">")))


@dataclass
class Vocab:
    model: str                      # "gpt2", "llama" or "bert"
    pre: str
    tokens: list
    token_types: list
    scores: list = None
    merges: list = None
    special_ids: dict = field(default_factory=dict)     # "bos" -> id
    add_bos: bool = None
    add_eos: bool = None
    chat_template: str = None
    normalizer: dict = field(default_factory=dict)      # "lowercase"/"strip_accents" -> bool (WordPiece)


def read_vocab(folder, config) -> Vocab:
    folder = Path(folder)
    tok_config = _read_json(folder / "tokenizer_config.json") or {}
    tok_json = _read_json(folder / "tokenizer.json")       # tens of MB for big vocabularies: read it once
    if (folder / "tokenizer.model").is_file():
        vocab = _sentencepiece_vocab(folder, config, tok_config)
    elif tok_json is not None:
        vocab = _tokenizer_json_vocab(folder, config, tok_json)
    else:
        raise ConvertError(f"{folder}: no tokenizer.json or tokenizer.model; copy the tokenizer files into the folder")
    _read_special_tokens(vocab, folder, config, tok_config, tok_json or {})
    return vocab


def _read_json(path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _tokenizer_json_vocab(folder, config, tj):
    model = tj["model"]
    if model.get("type") == "WordPiece":
        return _wordpiece_vocab(folder, config, tj)
    if model.get("type") != "BPE":
        raise ConvertError(f"{folder / 'tokenizer.json'}: a {model.get('type')} tokenizer; nibble converts BPE and "
                           "WordPiece tokenizers (tokenizer.json) and SentencePiece ones (tokenizer.model)")
    added, n_vocab, by_id = _tokens_by_id(model["vocab"], config, tj)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    spm_style = model.get("byte_fallback") or "▁" in json.dumps(tj.get("normalizer") or {}, ensure_ascii=False)
    tokens, types = [], []
    for i in range(n_vocab):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            special = added[i].get("special") or looks_special(text)
            if not special and not spm_style:
                text = text.replace("▁", " ")
            tokens.append(text)
            types.append(TokenType.CONTROL if special else TokenType.USER_DEFINED)
        elif spm_style and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            tokens.append(text)
            types.append(TokenType.BYTE)
        else:
            tokens.append(text)
            types.append(TokenType.NORMAL)
    if spm_style:
        # A SentencePiece model exported as BPE: its merge order is its score order, so the score of a
        # token is minus the rank of the merge that makes it (SentencePiece merges the best score first).
        rank = {}
        for r, merge in enumerate(merges):
            rank.setdefault(merge.replace(" ", ""), r)
        scores = [0.0 if t == TokenType.BYTE else -1000.0 if t != TokenType.NORMAL
                  else -float(rank.get(text, len(merges) + i)) for i, (text, t) in enumerate(zip(tokens, types))]
        return Vocab("llama", "default", tokens, types, scores=scores)
    return Vocab("gpt2", _pre_tokenizer_name(folder), tokens, types, merges=merges)


def _tokens_by_id(model_vocab, config, tj):
    """tokenizer.json's added tokens by id, the vocabulary size (config's, when it pads the matrix) and
    every token's text by id."""
    vocab = dict(model_vocab)
    added = {t["id"]: t for t in tj.get("added_tokens", [])}
    for t in added.values():
        vocab.setdefault(t["content"], t["id"])
    n_vocab = max(int(config.get("vocab_size") or 0), max(vocab.values()) + 1)
    return added, n_vocab, {i: text for text, i in vocab.items()}


def _wordpiece_vocab(folder, config, tj):
    """A BERT vocabulary as llama.cpp's converter writes it: "##" continuations lose their prefix, every other
    token but the special ones gains a leading "▁" (its WPM tokenizer puts one before each word)."""
    added, n_vocab, by_id = _tokens_by_id(tj["model"]["vocab"], config, tj)
    tokens, types = [], []
    for i in range(n_vocab):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added and (added[i].get("special") or looks_special(text)):
            tokens.append(text)
            types.append(TokenType.CONTROL)
        else:
            tokens.append(text[2:] if text.startswith("##") else "\u2581" + text)
            types.append(TokenType.USER_DEFINED if i in added else TokenType.NORMAL)
    normalizer = {}
    for part in _normalizers(tj.get("normalizer") or {}):
        kind = part.get("type")
        if kind == "Lowercase":
            normalizer["lowercase"] = True
        elif kind == "StripAccents":
            normalizer["strip_accents"] = True
        elif kind == "BertNormalizer":
            normalizer.update({key: part[key] for key in ("lowercase", "strip_accents") if part.get(key) is not None})
    return Vocab("bert", _pre_tokenizer_name(folder, required=False), tokens, types, normalizer=normalizer)


def _normalizers(normalizer):
    if normalizer.get("type") == "Sequence":
        return [n for part in normalizer.get("normalizers", []) for n in _normalizers(part)]
    return [normalizer]


def _pre_tokenizer_name(folder, required=True):
    """tokenizer.ggml.pre, named as llama.cpp's converter does by hashing the ids of CHECK_TEXT. Without
    `required` (WordPiece, whose tokenizer in llama.cpp ignores the name) an unknown hash gives "default"."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConvertError("converting a tokenizer.json needs the `tokenizers` package (pip install tokenizers)") from None
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_truncation()          # a tokenizer.json may cut encodings short (BERT's at 128 tokens)
    tokenizer.no_padding()
    digest = sha256(str(tokenizer.encode(CHECK_TEXT).ids).encode()).hexdigest()
    if digest in PRE_TOKENIZER_HASHES:
        return PRE_TOKENIZER_HASHES[digest]
    if not required:
        return "default"
    raise ConvertError(f"{folder / 'tokenizer.json'}: unknown BPE pre-tokenizer (check hash {digest}); "
                       "llama.cpp would not recognize it either")


def _sentencepiece_vocab(folder, config, tok_config):
    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(folder / "tokenizer.model"))
    n_vocab = int(config.get("vocab_size") or sp.vocab_size())
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [TokenType.UNUSED] * n_vocab
    for i in range(min(n_vocab, sp.vocab_size())):
        tokens[i] = sp.IdToPiece(i)
        scores[i] = sp.GetScore(i)
        types[i] = (TokenType.UNKNOWN if sp.IsUnknown(i) else TokenType.CONTROL if sp.IsControl(i)
                    else TokenType.UNUSED if sp.IsUnused(i) else TokenType.BYTE if sp.IsByte(i) else TokenType.NORMAL)
    added = _read_json(folder / "added_tokens.json") or {}
    for text, i in added.items():
        if i < n_vocab:
            tokens[i], scores[i], types[i] = text, -1000.0, TokenType.USER_DEFINED
    for i, data in (tok_config.get("added_tokens_decoder") or {}).items():
        i = int(i)
        if i < n_vocab:
            special = data.get("special") or looks_special(data["content"])
            tokens[i] = data["content"] if special else data["content"].replace("▁", " ")
            types[i] = TokenType.CONTROL if special else TokenType.USER_DEFINED
            scores[i] = -1000.0
    return Vocab("llama", "default", tokens, types, scores=scores)


SPECIAL_TOKEN_KINDS = ("bos", "eos", "unk", "sep", "pad", "mask")


def _read_special_tokens(vocab, folder, config, tok_config, tj):
    """Special token ids, add_bos/add_eos and the chat template, where gguf-py's SpecialVocab finds them
    (it takes cls for a missing bos and sep for a missing eos)."""
    ids = {text: i for i, text in enumerate(vocab.tokens)}
    tok_config = dict(tok_config)
    for kind, fallback in (("bos", "cls"), ("eos", "sep")):
        if not tok_config.get(f"{kind}_token") and tok_config.get(f"{fallback}_token"):
            tok_config[f"{kind}_token"] = tok_config[f"{fallback}_token"]
    for kind in SPECIAL_TOKEN_KINDS:
        value = tok_config.get(f"{kind}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value in ids:
            vocab.special_ids[kind] = ids[value]
        elif isinstance(config.get(f"{kind}_token_id"), int):
            vocab.special_ids[kind] = config[f"{kind}_token_id"]
    post = tj.get("post_processor") or {}
    if post.get("type") == "TemplateProcessing":
        single = post.get("single") or []
        vocab.add_bos = bool(single) and "SpecialToken" in single[0]
        vocab.add_eos = len(single) > 1 and "SpecialToken" in single[-1]
    for kind in ("bos", "eos"):
        if isinstance(tok_config.get(f"add_{kind}_token"), bool):
            setattr(vocab, f"add_{kind}", tok_config[f"add_{kind}_token"])
    template = tok_config.get("chat_template")
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(template, str):
        vocab.chat_template = template


# --- architectures ---------------------------------------------------------------------------------

def _permute_for_rope(w, n_head):
    """HF stores q/k with the two rotary halves apart; llama.cpp's llama rope wants them interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama_tensor(name, w, config):
    if name.endswith("attn_q.weight"):
        return _permute_for_rope(w, config["num_attention_heads"])
    if name.endswith("attn_k.weight"):
        return _permute_for_rope(w, config.get("num_key_value_heads") or config["num_attention_heads"])
    return w


def _gemma_tensor(name, w, config):
    return w + np.float32(1.0) if name.endswith("norm.weight") else w     # Gemma's RMSNorm scales by (1 + w)


def _rope_theta(config, layer_type=None):
    params = config.get("rope_parameters") or {}
    if layer_type and layer_type in params:
        params = params[layer_type]
    return params.get("rope_theta", config.get("rope_theta", 10000.0))


def _rope_scaling(config):
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if "full_attention" in scaling:
        scaling = scaling["full_attention"]
    return scaling.get("rope_type") or scaling.get("type"), scaling


def _head_dim(config):
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def _common_hparams(config, rope_theta=None):
    n_head = config["num_attention_heads"]
    return [("context_length", config.get("max_position_embeddings", 2048), V.UINT32),
            ("embedding_length", config["hidden_size"], V.UINT32),
            ("block_count", config["num_hidden_layers"], V.UINT32),
            ("feed_forward_length", config["intermediate_size"], V.UINT32),
            ("attention.head_count", n_head, V.UINT32),
            ("attention.head_count_kv", config.get("num_key_value_heads") or n_head, V.UINT32),
            ("rope.freq_base", rope_theta or _rope_theta(config), V.FLOAT32),
            ("attention.layer_norm_rms_epsilon", config.get("rms_norm_eps", 1e-6), V.FLOAT32)]


def _head_length_keys(head_dim):
    return [("attention.key_length", head_dim, V.UINT32), ("attention.value_length", head_dim, V.UINT32)]


def _linear_rope_keys(config):
    kind, scaling = _rope_scaling(config)
    if kind != "linear":
        return []
    return [("rope.scaling.type", "linear", V.STRING), ("rope.scaling.factor", scaling["factor"], V.FLOAT32)]


def _sliding_window_keys(config):
    """Mistral's window, which llama.cpp's converter leaves out (nibble applies it, llama.cpp ignores the key)."""
    window = config.get("sliding_window")
    return [("attention.sliding_window", window, V.UINT32)] if window else []


def _llama_hparams(config):
    head_dim = _head_dim(config)
    keys = _common_hparams(config) + [("vocab_size", config["vocab_size"], V.UINT32),
                                      ("rope.dimension_count", head_dim, V.UINT32)]
    if head_dim != config["hidden_size"] // config["num_attention_heads"]:
        keys += _head_length_keys(head_dim)
    return keys + _linear_rope_keys(config) + _sliding_window_keys(config)


def _qwen3_hparams(config):
    """As llama.cpp's converter: the common keys plus the head size, which config.json states."""
    return _common_hparams(config) + _head_length_keys(_head_dim(config))


def _rope_parameters(config):
    """RoPE settings of either config.json style: keys at the top with rope_scaling (transformers 4), or
    rope_parameters (transformers 5)."""
    merged = {k: config[k] for k in ("rope_theta", "partial_rotary_factor", "original_max_position_embeddings")
              if k in config}
    merged.update(config.get("rope_scaling") or {})
    params = config.get("rope_parameters") or {}
    merged.update(params.get("full_attention", params))
    return merged


def _phi3_rope(config):
    """(rotary dimensions, original context, long factors, short factors, attention factor) of a Phi-3 config."""
    rope = _rope_parameters(config)
    n_embd, n_head = config["hidden_size"], config["num_attention_heads"]
    rope_dims = int(rope.get("partial_rotary_factor", 1.0) * n_embd) // n_head
    original = rope.get("original_max_position_embeddings", config.get("max_position_embeddings", 4096))
    long_factors, short_factors = rope.get("long_factor"), rope.get("short_factor")
    attn_factor = 1.0
    if long_factors:
        if (rope.get("rope_type") or rope.get("type")) not in ("longrope", "su"):
            raise ConvertError(f"rope scaling {rope.get('rope_type') or rope.get('type')!r} with long/short factors "
                               "is not supported (nibble converts longrope)")
        if len(long_factors) != rope_dims // 2 or len(short_factors or ()) != rope_dims // 2:
            raise ConvertError(f"rope long_factor and short_factor must have {rope_dims // 2} values each")
        scale = config.get("max_position_embeddings", original) / original
        attn_factor = rope.get("attention_factor") or (
            math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1.0 else 1.0)
    return rope_dims, original, long_factors, short_factors, attn_factor


def _phi3_hparams(config):
    rope_dims, original, long_factors, _, attn_factor = _phi3_rope(config)
    keys = [key for key in _common_hparams(config) if key[0] != "rope.freq_base"]
    keys += [("rope.freq_base", _rope_parameters(config).get("rope_theta", 10000.0), V.FLOAT32),
             ("rope.dimension_count", rope_dims, V.UINT32),
             ("rope.scaling.original_context_length", original, V.UINT32),
             ("attention.sliding_window", config.get("sliding_window") or 0, V.UINT32)]
    if long_factors:
        keys.append(("rope.scaling.attn_factor", attn_factor, V.FLOAT32))
    return keys


def _phi3_tensors(config):
    """Phi-3's long-context RoPE factors as rope_factors_long/short tensors, as llama.cpp's converter writes."""
    _, _, long_factors, short_factors, _ = _phi3_rope(config)
    if not long_factors:
        return []
    return [("rope_factors_long.weight", np.asarray(long_factors, np.float32)),
            ("rope_factors_short.weight", np.asarray(short_factors, np.float32))]


def _gemma2_hparams(config):
    return (_common_hparams(config) + _head_length_keys(config.get("head_dim", 256))
            + [("attn_logit_softcapping", config.get("attn_logit_softcapping") or 0.0, V.FLOAT32),
               ("final_logit_softcapping", config.get("final_logit_softcapping") or 0.0, V.FLOAT32),
               ("attention.sliding_window", config["sliding_window"], V.UINT32)])


def _gemma3_hparams(config):
    return (_common_hparams(config, rope_theta=_rope_theta(config, "full_attention"))
            + _head_length_keys(config.get("head_dim", 256))
            + [("attention.sliding_window", config["sliding_window"], V.UINT32)] + _linear_rope_keys(config))


def _llama3_rope_freqs(config):
    """llama3 rope scaling is stored as a rope_freqs tensor of per-frequency divisors, as llama.cpp does."""
    kind, s = _rope_scaling(config)
    if kind != "llama3":
        return []
    head_dim = _head_dim(config)
    freqs = 1.0 / (_rope_theta(config) ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    low_wavelen = s.get("original_max_position_embeddings", 8192) / s.get("low_freq_factor", 1.0)
    high_wavelen = s.get("original_max_position_embeddings", 8192) / s.get("high_freq_factor", 4.0)
    factors = []
    for freq in freqs:
        wavelen = 2 * np.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(s["factor"])
        else:
            smooth = (s.get("original_max_position_embeddings", 8192) / wavelen - s.get("low_freq_factor", 1.0)) / \
                     (s.get("high_freq_factor", 4.0) - s.get("low_freq_factor", 1.0))
            factors.append(1.0 / ((1 - smooth) / s["factor"] + smooth))
    return [("rope_freqs.weight", np.array(factors, dtype=np.float32))]


def _bert_hparams(config):
    return [("context_length", config.get("max_position_embeddings", 512), V.UINT32),
            ("embedding_length", config["hidden_size"], V.UINT32),
            ("feed_forward_length", config["intermediate_size"], V.UINT32),
            ("block_count", config["num_hidden_layers"], V.UINT32),
            ("attention.head_count", config["num_attention_heads"], V.UINT32),
            ("attention.layer_norm_epsilon", config.get("layer_norm_eps", 1e-12), V.FLOAT32),
            ("attention.causal", False, V.BOOL)]


def _bert_checkpoint_name(name):
    """BertModel, BertForMaskedLM and sentence-transformers names; the pooler and the masked-LM head are
    dropped (llama.cpp's converter keeps the encoder only)."""
    name = name.removeprefix("bert.")
    if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias") or name.startswith("cls."):
        return None
    return name


@dataclass(frozen=True)
class HFArchitecture:
    gguf_arch: str
    model_arch: MODEL_ARCH
    hparams: Callable
    tensor: Callable = lambda name, w, config: w
    checkpoint_name: Callable = lambda name: name      # the name the tensor map knows, or None to leave it out
    extra_tensors: Callable = lambda config: []          # [(GGUF name, float32 array)] made from config.json
    tied_by_default: bool = False                        # tie_word_embeddings when config.json does not say
    space_prefix: bool = True                            # False: write add_space_prefix false (Gemma's vocabulary)


HF_ARCHITECTURES = {
    "LlamaForCausalLM": HFArchitecture("llama", MODEL_ARCH.LLAMA, _llama_hparams, _llama_tensor,
                                       extra_tensors=_llama3_rope_freqs),
    "MistralForCausalLM": HFArchitecture("llama", MODEL_ARCH.LLAMA, _llama_hparams, _llama_tensor,
                                         extra_tensors=_llama3_rope_freqs),
    "Gemma2ForCausalLM": HFArchitecture("gemma2", MODEL_ARCH.GEMMA2, _gemma2_hparams, _gemma_tensor,
                                        checkpoint_name=lambda name: None if name == "lm_head.weight" else name,
                                        tied_by_default=True, space_prefix=False),
    "Gemma3ForCausalLM": HFArchitecture("gemma3", MODEL_ARCH.GEMMA3, _gemma3_hparams, _gemma_tensor,
                                        tied_by_default=True, space_prefix=False),
    "Qwen2ForCausalLM": HFArchitecture("qwen2", MODEL_ARCH.QWEN2, _common_hparams),
    "Qwen3ForCausalLM": HFArchitecture("qwen3", MODEL_ARCH.QWEN3, _qwen3_hparams),
    "Phi3ForCausalLM": HFArchitecture("phi3", MODEL_ARCH.PHI3, _phi3_hparams, extra_tensors=_phi3_tensors),
    "BertModel": HFArchitecture("bert", MODEL_ARCH.BERT, _bert_hparams, checkpoint_name=_bert_checkpoint_name),
    "BertForMaskedLM": HFArchitecture("bert", MODEL_ARCH.BERT, _bert_hparams, checkpoint_name=_bert_checkpoint_name),
}

# Checkpoint tensors llama.cpp's converter drops: recomputed at run time.
IGNORED_TENSORS = ("rotary_emb.inv_freq",)

OUTTYPES = {"f32": (T.F32, FT.ALL_F32), "f16": (T.F16, FT.MOSTLY_F16), "bf16": (T.BF16, FT.MOSTLY_BF16),
            "q8_0": (T.Q8_0, FT.MOSTLY_Q8_0)}


def sentence_transformers_pooling(folder):
    """The pooling of a sentence-transformers folder (modules.json naming a Pooling module), as llama.cpp's
    converter reads it: MEAN, CLS or LAST; None for a plain model folder."""
    modules = _read_json(Path(folder) / "modules.json") or []
    path = next((m.get("path") for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    if path is None:
        return None
    pooling = _read_json(Path(folder) / path / "config.json") or {}
    modes = {"mean": PoolingType.MEAN, "cls": PoolingType.CLS, "lasttoken": PoolingType.LAST}
    for flag, kind in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"),
                       ("pooling_mode_lasttoken", "lasttoken")):
        if pooling.get(flag):
            return modes[kind]
    if pooling.get("pooling_mode") in modes:
        return modes[pooling["pooling_mode"]]
    raise ConvertError(f"{Path(folder) / path / 'config.json'}: pooling {pooling}; llama.cpp and nibble pool by "
                       "mean, CLS token or last token")


# --- writing -------------------------------------------------------------------------------------------

@dataclass
class ConvertReport:
    architecture: str
    n_tensors: int
    n_elements: int


def convert(folder, destination, outtype="f16", *, progress=None) -> ConvertReport:
    """Write `destination` from the Hugging Face folder; `outtype` is f32/f16/bf16/q8_0 or a quantize mix."""
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    if config is None:
        raise ConvertError(f"{folder}: no config.json; is this a Hugging Face model folder?")
    names = config.get("architectures") or []
    arch = next((HF_ARCHITECTURES[n] for n in names if n in HF_ARCHITECTURES), None)
    if arch is None:
        raise ConvertError(f"{folder}: architecture {', '.join(names) or '(none)'} is not supported; nibble converts "
                           f"{', '.join(HF_ARCHITECTURES)}")
    if config.get("text_config"):
        config = {**config, **config["text_config"]}
    outtype = outtype.lower()
    if outtype not in OUTTYPES:
        from .quantize import MIXES, mix_by_name, quantize_file
        if outtype.upper() not in MIXES:
            raise ConvertError(f"unknown --outtype {outtype!r}; choose {', '.join(OUTTYPES)} or a quantize type "
                               f"({', '.join(MIXES)})")
        mix = mix_by_name(outtype)
        fd, tmp = tempfile.mkstemp(suffix=".f32.gguf", dir=os.path.dirname(os.path.abspath(destination)))
        os.close(fd)
        try:
            report = convert(folder, tmp, "f32", progress=progress)
            quantize_file(tmp, destination, mix)
        finally:
            os.unlink(tmp)
        return report
    default_type, file_type = OUTTYPES[outtype]
    tensors = open_checkpoint(folder)
    vocab = read_vocab(folder, config)
    name_map = get_tensor_name_map(arch.model_arch, config["num_hidden_layers"])
    tied = config.get("tie_word_embeddings", arch.tied_by_default)

    plan = []          # (gguf name, SafeTensor or array, type)
    for hf_name, t in tensors.items():
        if hf_name.endswith(IGNORED_TENSORS) or (tied and hf_name == "lm_head.weight"):
            continue
        known_name = arch.checkpoint_name(hf_name)
        if known_name is None:
            continue
        gguf_name = name_map.get_name(known_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConvertError(f"{folder}: tensor {hf_name} has no GGUF name for {arch.gguf_arch}; "
                               "the checkpoint does not match its config.json architecture")
        plan.append((gguf_name, t, _tensor_type(gguf_name, t.shape, default_type)))
    plan += [(name, values, T.F32) for name, values in arch.extra_tensors(config)]

    with GGUFWriter(destination) as out:
        _write_metadata(out, arch, config, folder, vocab, file_type)
        for name, t, qtype in plan:
            out.add_tensor(name, t.shape, qtype)
        for name, t, qtype in plan:
            out.write_tensor_parts(name, _tensor_parts(name, t, qtype, arch, config))
            if progress and isinstance(t, SafeTensor):
                progress(t.data.nbytes)
    n_elements = sum(int(np.prod(t.shape)) for _, t, _ in plan)
    return ConvertReport(arch.gguf_arch, len(plan), n_elements)


ALWAYS_F32 = ("position_embd.weight", "token_types.weight")    # BERT's lookup tables, as llama.cpp's converter


def _tensor_type(name, shape, default_type):
    """llama.cpp's converter keeps 1-D tensors, norms and BERT's position and token-type tables in F32; a Q8_0
    row 32 does not divide stays F16."""
    if len(shape) < 2 or name.endswith("norm.weight") or name in ALWAYS_F32 or default_type == T.F32:
        return T.F32
    if default_type == T.Q8_0 and shape[-1] % 32:
        return T.F16
    return default_type


def _tensor_parts(name, t, qtype, arch, config):
    """The tensor in `qtype`, a slice of rows at a time; the file pages of each slice are let go once converted."""
    if not isinstance(t, SafeTensor):
        yield quantize(t, qtype)
        return
    if name.endswith(("attn_q.weight", "attn_k.weight")) or len(t.shape) < 2:
        yield quantize(arch.tensor(name, t.to_float32(), config), qtype)      # q/k permute across rows: whole
        t.file.drop_resident_pages(t.offset, t.data.nbytes)
        return
    n_cols = t.shape[-1]
    rows = t.data.reshape(-1, n_cols)
    step = max(1, PART_ELEMENTS // n_cols)
    for first in range(0, rows.shape[0], step):
        part = rows[first:first + step]
        chunk = SafeTensor(t.name, t.dtype, part.shape, part, t.file)
        yield quantize(arch.tensor(name, chunk.to_float32(), config), qtype)
        t.file.drop_resident_pages(t.offset + first * rows.strides[0], part.nbytes)


def _write_metadata(out, arch, config, folder, vocab, file_type):
    a = arch.gguf_arch
    out.add_metadata("general.architecture", a, V.STRING)
    out.add_metadata("general.type", "model", V.STRING)
    out.add_metadata("general.name", config.get("_name_or_path") or config.get("_model_name_or_path") or folder.name,
                     V.STRING)
    for key, value, vtype in arch.hparams(config):
        out.add_metadata(f"{a}.{key}", value, vtype)
    pooling = sentence_transformers_pooling(folder)
    if pooling is not None:
        out.add_metadata(f"{a}.pooling_type", int(pooling), V.UINT32)
    out.add_metadata("general.file_type", int(file_type), V.UINT32)
    out.add_metadata("general.quantization_version", GGML_QNT_VERSION, V.UINT32)
    out.add_metadata("tokenizer.ggml.model", vocab.model, V.STRING)
    out.add_metadata("tokenizer.ggml.pre", vocab.pre, V.STRING)
    out.add_metadata("tokenizer.ggml.tokens", vocab.tokens, (V.ARRAY, V.STRING))
    if vocab.scores is not None:
        out.add_metadata("tokenizer.ggml.scores", np.asarray(vocab.scores, np.float32), (V.ARRAY, V.FLOAT32))
    out.add_metadata("tokenizer.ggml.token_type", np.asarray([int(t) for t in vocab.token_types], np.int32),
                     (V.ARRAY, V.INT32))
    if vocab.merges:
        out.add_metadata("tokenizer.ggml.merges", vocab.merges, (V.ARRAY, V.STRING))
    for kind in SPECIAL_TOKEN_KINDS:
        if kind in vocab.special_ids:
            key = {"unk": "unknown", "pad": "padding", "sep": "seperator"}.get(kind, kind)   # sic, as llama.cpp
            out.add_metadata(f"tokenizer.ggml.{key}_token_id", vocab.special_ids[kind], V.UINT32)
    if vocab.add_bos is not None:
        out.add_metadata("tokenizer.ggml.add_bos_token", vocab.add_bos, V.BOOL)
    if vocab.add_eos is not None:
        out.add_metadata("tokenizer.ggml.add_eos_token", vocab.add_eos, V.BOOL)
    if vocab.model == "bert":
        out.add_metadata("tokenizer.ggml.token_type_count", config.get("type_vocab_size", 1), V.UINT32)
        out.add_metadata("tokenizer.ggml.add_sep_token", False, V.BOOL)   # [SEP] closes every text anyway
    for key, value in vocab.normalizer.items():
        out.add_metadata(f"tokenizer.ggml.normalizer.{key}", bool(value), V.BOOL)
    if not arch.space_prefix:
        out.add_metadata("tokenizer.ggml.add_space_prefix", False, V.BOOL)     # as llama.cpp's Gemma2/3 models
    if vocab.chat_template:
        out.add_metadata("tokenizer.chat_template", vocab.chat_template, V.STRING)
