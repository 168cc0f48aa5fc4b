"""Tokenizers built from GGUF metadata alone (`tokenizer.ggml.*`), giving llama.cpp's token ids.

Three vocabulary kinds, as llama.cpp has them:
- `gpt2`: byte-level BPE. Text is split into words by the pre-tokenizer named in `tokenizer.ggml.pre`
  (runtime/pretokenize.py), each word is mapped to byte-level characters and merged by merge rank.
- `llama`: SentencePiece-style. Spaces become "▁" and adjacent pieces merge by token score; characters
  without a token fall back to `<0xNN>` byte tokens.
- `bert`: WordPiece (llama.cpp's WPM). Text is lowercased and stripped of accents as the metadata says,
  split at whitespace and around punctuation and CJK characters, and each word, behind a "▁", is cut into
  the longest tokens from the left; a word with a piece no token covers becomes the unknown token.

Before any of them, special tokens are cut out of the text the way llama.cpp does: user-defined tokens
always, control and unknown tokens only with `parse_special`; tokens llama.cpp marks to strip whitespace
take the spaces beside them (Phi-3's special tokens the newlines after them). Words are cached, so typical
text costs one regex pass and one dictionary lookup per word.
"""
from __future__ import annotations

import codecs
import heapq
import re
import unicodedata
from pathlib import Path

import numpy as np
import regex

from gguf_io import open_gguf

from .pretokenize import PRE_TOKENIZERS, Splitter

# tokenizer.ggml.token_type values (llama.h, enum llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPACE_MARK = "\u2581"   # SentencePiece's visible space "▁"

# Special tokens llama.cpp finds by their text (llama_vocab::impl::load in the llama.cpp nibble is checked
# against): a kind the metadata does not name takes the first of its texts in the vocabulary, and the token
# becomes a control token. FIM pad/repo/separator tokens end generation.
SPECIAL_TEXTS = {
    "eot": ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
            "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"),
    "eom": ("<|eom_id|>",),
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
EOG_KINDS = ("fim_pad", "fim_rep", "fim_sep", "eot", "eom")
# Texts that end generation whatever the metadata says; each becomes a control token.
EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
             "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
             "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
             "<｜end▁of▁sentence｜>", "[e~[")
# A token that leaves the end-of-generation set, and the type it takes, when the set holds all the texts of
# one of the groups: gpt-oss's <|end|> (it ends a message, not the reply); gemma4's and plamo's </s>.
EOG_EXCEPTIONS = (((("<|return|>", "<|call|>"), ("<|calls|>", "<|flush|>")), "<|end|>", USER_DEFINED),
                  ((("<|tool_response>",), ("<|plamo:eos|>",)), "</s>", NORMAL))
# gpt-oss's channel tokens, which llama.cpp always renders and matches as user-defined tokens.
ALWAYS_USER_DEFINED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")

# Per vocabulary kind: default special ids and whether BOS/EOS and a leading space are added.
_KIND_DEFAULTS = {
    "llama": dict(bos=1, eos=2, unk=0, add_bos=True, add_eos=False, add_space_prefix=True),
    "gpt2": dict(bos=11, eos=11, unk=None, add_bos=False, add_eos=False, add_space_prefix=False),
    "bert": dict(bos=101, eos=None, unk=100, add_bos=True, add_eos=False, add_space_prefix=False),
}
BERT_SEP_DEFAULT = 102    # llama.cpp's WPM ends every text it adds special tokens to with this (or the file's sep)

_WORD_CACHE_LIMIT = 200_000
_ASCII_SPACE = " \t\n\v\f\r"      # C's isspace, which llama.cpp's strip attributes test


class TokenizerError(ValueError):
    """The file's tokenizer metadata is missing, inconsistent or of a kind nibble does not support."""


def _bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


_BYTE_TO_CHAR = _bytes_to_unicode()   # also a str.translate table: latin-1 code point -> byte-level char
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def _merge(symbols: list[str], ranks: dict, separator: str) -> list[str]:
    """Merge adjacent symbols a, b with the best rank `ranks[a + separator + b]` (lowest; ties: leftmost).

    This is llama.cpp's work-queue loop for both BPE (merge rank, keyed "a b") and SentencePiece (negated
    token score, keyed "ab"): a popped pair is stale if either side changed since it was queued.
    """
    n = len(symbols)
    if n < 2:
        return symbols
    text = list(symbols)
    prev = list(range(-1, n - 1))
    following = list(range(1, n + 1))
    following[-1] = -1
    rank_of = ranks.get
    queue = []
    for i in range(n - 1):
        rank = rank_of(text[i] + separator + text[i + 1])
        if rank is not None:
            queue.append((rank, i, i + 1, len(text[i]) + len(text[i + 1])))
    heapq.heapify(queue)
    push, pop = heapq.heappush, heapq.heappop
    while queue:
        _, left, right, size = pop(queue)
        a, b = text[left], text[right]
        if not a or not b or len(a) + len(b) != size:
            continue
        text[left] = merged = a + b
        text[right] = ""
        after = following[left] = following[right]
        if after >= 0:
            prev[after] = left
            rank = rank_of(merged + separator + text[after])
            if rank is not None:
                push(queue, (rank, left, after, len(merged) + len(text[after])))
        before = prev[left]
        if before >= 0:
            rank = rank_of(text[before] + separator + merged)
            if rank is not None:
                push(queue, (rank, before, left, len(text[before]) + len(merged)))
    return [t for t in text if t]


def _longest_match_pattern(words) -> str:
    """A regex matching any of `words`, preferring the longest at each position (a trie of alternatives)."""
    trie: dict = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node):
        branches = [re.escape(char) + emit(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(trie)


# llama.cpp's whitespace set (unicode-data.cpp, from PropList.txt's White_Space) and its CJK ranges (WPM).
_WHITESPACE = frozenset([*range(0x09, 0x0E), *range(0x2000, 0x200B), 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029,
                         0x202F, 0x205F, 0x3000])
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
_CONTROL = regex.compile(r"[\p{Cc}\p{Cf}\p{Co}\p{Cs}]")
_MARK, _PUNCTUATION, _SYMBOL = (regex.compile(rf"\p{{{c}}}") for c in "MPS")


class _WordPieceTable(dict):
    """str.translate table for WordPiece text, filled on demand, as llama.cpp's WPM preprocessing treats each
    code point: accents stripped (NFD, keeping the first code point), whitespace -> " ", NUL, U+FFFD and
    control characters dropped (and combining marks when stripping accents), lowercased (simple case
    mapping), punctuation, ASCII symbols and CJK characters set apart as words of their own."""

    def __init__(self, lowercase, strip_accents):
        super().__init__()
        self.lowercase, self.strip_accents = lowercase, strip_accents

    def __missing__(self, cpt):
        char = unicodedata.normalize("NFD", chr(cpt))[0] if self.strip_accents else chr(cpt)
        code = ord(char)
        if code in _WHITESPACE:
            out = " "
        elif code in (0, 0xFFFD) or _CONTROL.match(char) or (self.strip_accents and _MARK.match(char)):
            out = ""
        else:
            out = char.lower()[0] if self.lowercase else char     # U+0130's full lowercase has two code points
            if _PUNCTUATION.match(char) or (code < 0x7F and _SYMBOL.match(char)) or \
                    any(a <= code <= b for a, b in _CJK):
                out = f" {out} "
        self[cpt] = out
        return out


class Tokenizer:
    """Text <-> token ids for one GGUF vocabulary, matching llama.cpp's `llama_tokenize`."""

    def __init__(self, metadata: dict):
        get = metadata.get
        self.kind = get("tokenizer.ggml.model")
        if self.kind not in _KIND_DEFAULTS:
            raise TokenizerError(f"tokenizer.ggml.model {self.kind!r} is not supported "
                                 f"(nibble reads {', '.join(_KIND_DEFAULTS)})")
        tokens = get("tokenizer.ggml.tokens")
        if not tokens:
            raise TokenizerError("the file has no tokenizer.ggml.tokens")
        self.tokens: list[str] = list(tokens)
        n = len(self.tokens)
        types = get("tokenizer.ggml.token_type")
        self.token_types = np.full(n, NORMAL, np.int32) if types is None else np.array(types, np.int32)
        scores = get("tokenizer.ggml.scores")
        self.scores = np.zeros(n, np.float32) if scores is None else np.asarray(scores, np.float32)
        if len(self.token_types) != n or len(self.scores) != n:
            raise TokenizerError("tokenizer.ggml.token_type/scores do not match tokenizer.ggml.tokens in length")
        self.vocab = dict(zip(self.tokens, range(n)))
        self.vocab.pop("", None)

        defaults = _KIND_DEFAULTS[self.kind]
        self.pre = get("tokenizer.ggml.pre") or "default"
        pre = PRE_TOKENIZERS.get(self.pre) if self.kind == "gpt2" else None
        if self.kind == "gpt2" and pre is None:
            raise TokenizerError(f"pre-tokenizer {self.pre!r} (tokenizer.ggml.pre) is not supported; "
                                 f"known: {', '.join(sorted(PRE_TOKENIZERS))}")
        self.add_bos = bool(get("tokenizer.ggml.add_bos_token",
                                pre.add_bos if pre and pre.add_bos is not None else defaults["add_bos"]))
        self.add_eos = bool(get("tokenizer.ggml.add_eos_token", defaults["add_eos"]))
        self.add_space_prefix = bool(get("tokenizer.ggml.add_space_prefix", defaults["add_space_prefix"]))

        def special(key, default=None):
            value = get(f"tokenizer.ggml.{key}", default)
            return value if value is not None and 0 <= value < n else default

        self.bos_id = special("bos_token_id", defaults["bos"])
        self.eos_id = special("eos_token_id", defaults["eos"])
        self.sep_id = special("seperator_token_id", BERT_SEP_DEFAULT if self.kind == "bert" else None)
        self.unk_id = special("unknown_token_id", defaults["unk"])
        self.pad_id = special("padding_token_id")
        self.special_ids = {}                      # eot, eom, fim_pre ... -> token id
        for kind, texts in SPECIAL_TEXTS.items():
            token_id = special(f"{kind}_token_id")
            if token_id is None:
                token_id = next((self.vocab[t] for t in texts if t in self.vocab), None)
                if token_id is not None:
                    self.token_types[token_id] = CONTROL
            if token_id is not None:
                self.special_ids[kind] = token_id
        self.eot_id = self.special_ids.get("eot")
        self.eog_ids = {self.special_ids[k] for k in EOG_KINDS if k in self.special_ids}
        for token_id in (self.vocab[t] for t in EOG_TEXTS if t in self.vocab):
            self.eog_ids.add(token_id)
            self.token_types[token_id] = CONTROL
        self.eog_ids |= {self.eos_id} - {None}
        for groups, text, token_type in EOG_EXCEPTIONS:
            eog_texts = {self.tokens[i] for i in self.eog_ids}
            if text in eog_texts and any(all(t in eog_texts for t in group) for group in groups):
                self.eog_ids.discard(self.vocab[text])
                self.token_types[self.vocab[text]] = token_type
        for token_id in (self.vocab[t] for t in ALWAYS_USER_DEFINED if t in self.vocab):
            self.token_types[token_id] = USER_DEFINED

        self.chat_template = get("tokenizer.chat_template")
        self._lstrip, self._rstrip = self._strip_attributes(get("general.name") or "", get("general.architecture") or "")
        self._matchers: dict = {}
        self._pieces: dict = {}
        self._words: dict = {}
        if self.kind == "bert":
            # llama.cpp's WPM adds [CLS] ... [SEP] whenever special tokens are added, whatever add_bos/add_eos say
            self.add_bos, self.add_eos = True, False
            lowercase = bool(get("tokenizer.ggml.normalizer.lowercase", True))
            self._wordpiece_table = _WordPieceTable(lowercase, bool(get("tokenizer.ggml.normalizer.strip_accents",
                                                                        lowercase)))
            self._longest_token = max(map(len, self.tokens))
            self._encode_text = self._encode_wpm
        elif self.kind == "gpt2":
            merges = get("tokenizer.ggml.merges")
            if not merges:
                raise TokenizerError("a gpt2 vocabulary needs tokenizer.ggml.merges; the file has none")
            self.ranks = dict(zip(merges, range(len(merges))))
            self._splitter = Splitter(pre.family)
            self._ignore_merges = pre.ignore_merges
            self._encode_text = self._encode_bpe
        else:
            self._negated_scores = dict(zip(self.tokens, (-self.scores).tolist()))
            self._spm_split = self._spm_splitter()
            self._encode_text = self._encode_spm

    def _strip_attributes(self, model_name, architecture):
        """Token ids that swallow the whitespace to their left (lstrip) and right (rstrip): llama.cpp sets these
        by model name (llama_vocab::impl::load), mirroring the tokenizers' added-token flags."""
        ids = self.vocab.get
        name = model_name.lower()
        if self.pre in ("jina-v2-de", "jina-v2-es", "jina-v2-code") or architecture in ("nomic-bert-moe", "jina-bert-v3"):
            return {ids("<mask>")} - {None}, set()
        if "phi-3" in name or "phi3" in name:
            special = set(np.nonzero(np.isin(self.token_types, (CONTROL, USER_DEFINED, UNKNOWN)))[0].tolist())
            return set(), (special | {ids("</s>")}) - {ids("<unk>"), ids("<s>"), ids("<|endoftext|>"), None}
        if "modern-bert" in name:
            return {ids("[MASK]")} - {None}, set()
        return set(), set()

    @classmethod
    def from_gguf(cls, source) -> "Tokenizer":
        """Build from a path or an open GGUFFile; only metadata is read."""
        if isinstance(source, (str, Path)):
            with open_gguf(source) as gguf:
                return cls(gguf.metadata)
        return cls(source.metadata)

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def is_eog(self, token_id: int) -> bool:
        return token_id in self.eog_ids

    # ---- encoding ----

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`, with llama_tokenize's flags.

        add_special: add BOS/EOS where the vocabulary asks for them (tokenizer.ggml.add_bos_token ...).
        parse_special: text of control tokens (e.g. "<|im_start|>") becomes those tokens; otherwise it is
        tokenized as plain text. User-defined tokens are matched either way, as in llama.cpp.
        """
        ids: list[int] = []
        if add_special and self.add_bos:
            ids.append(self.bos_id)
        previous_special = True
        for fragment in self._fragments(text, parse_special):
            if isinstance(fragment, int):
                ids.append(fragment)
                previous_special = True
            else:
                self._encode_text(fragment, previous_special, ids)
                previous_special = False
        if add_special and self.add_eos:
            ids.append(self.eos_id)
        if add_special and self.kind == "bert":
            ids.append(self.sep_id)
        return ids

    def encode_continuation(self, text: str) -> list[int]:
        """Token ids of `text` as it continues other text: no BOS/EOS, no SentencePiece space prefix, control-token
        text kept as text (what a grammar engine needs to tokenize a forced piece)."""
        ids: list[int] = []
        for fragment in self._fragments(text, False):
            if isinstance(fragment, int):
                ids.append(fragment)
            else:
                self._encode_text(fragment, False, ids)
        return ids

    def _fragments(self, text, parse_special):
        """Text pieces (str) and special tokens (int), leftmost-longest special match first; a token with a
        strip attribute takes the ASCII whitespace beside it out of its neighbouring piece."""
        if not text:
            return []
        matcher = self._special_matcher(parse_special)
        if matcher is None:
            return [text]
        fragments, position = [], 0
        for match in matcher.finditer(text):
            token_id = self.vocab[match.group()]
            piece = text[position:match.start()]
            if token_id in self._lstrip:
                piece = piece.rstrip(_ASCII_SPACE)
            if piece:
                fragments.append(piece)
            fragments.append(token_id)
            position = match.end()
            if token_id in self._rstrip:
                while position < len(text) and text[position] in _ASCII_SPACE:
                    position += 1
        if position < len(text):
            fragments.append(text[position:])
        return fragments

    def _special_matcher(self, parse_special):
        if parse_special not in self._matchers:
            wanted = (CONTROL, USER_DEFINED, UNKNOWN) if parse_special else (USER_DEFINED,)
            ids = np.nonzero(np.isin(self.token_types, wanted))[0]
            texts = {self.tokens[i] for i in ids.tolist() if self.tokens[i]}
            self._matchers[parse_special] = re.compile(_longest_match_pattern(texts)) if texts else None
        return self._matchers[parse_special]

    def _remember(self, word, ids):
        if len(self._words) >= _WORD_CACHE_LIMIT:
            self._words.clear()
        self._words[word] = ids
        return ids

    def _encode_bpe(self, text, _previous_special, out):
        words = self._words
        for word in self._splitter.split(text):
            ids = words.get(word)
            if ids is None:
                ids = self._remember(word, self._bpe_word(word))
            out.extend(ids)

    def _bpe_word(self, word):
        encoded = word.encode("utf-8").decode("latin-1").translate(_BYTE_TO_CHAR)
        vocab = self.vocab
        if self._ignore_merges and encoded in vocab:
            return [vocab[encoded]]
        ids = []
        for symbol in _merge(list(encoded), self.ranks, " "):
            token_id = vocab.get(symbol)
            if token_id is not None:
                ids.append(token_id)
            else:   # llama.cpp then tries each UTF-8 byte of the symbol as a one-byte token
                ids.extend(vocab[chr(b)] for b in symbol.encode("utf-8") if b < 0x80 and chr(b) in vocab)
        return ids

    def _spm_splitter(self):
        """Split SentencePiece text before each "▁" that no token can span, so pieces merge independently.

        A merge across such a boundary would need a token containing "<char>▁"; the characters for which
        some token does are excluded (in Gemma 3 only ">", from ">▁</").
        """
        joiners = {token[i - 1] for token in self.tokens if SPACE_MARK in token[1:]
                   for i in range(1, len(token)) if token[i] == SPACE_MARK}
        excluded = re.escape("".join(sorted(joiners | {SPACE_MARK})))
        return re.compile(f"(?<=[^{excluded}])(?={SPACE_MARK})").split

    def _encode_spm(self, text, previous_special, out):
        if self.add_space_prefix and previous_special:
            text = " " + text
        words = self._words
        for piece in self._spm_split(text.replace(" ", SPACE_MARK)):
            ids = words.get(piece)
            if ids is None:
                ids = self._remember(piece, self._spm_piece(piece))
            out.extend(ids)

    def _spm_piece(self, piece):
        vocab = self.vocab
        ids = []
        for symbol in _merge(list(piece), self._negated_scores, ""):
            token_id = vocab.get(symbol)
            if token_id is not None:
                ids.append(token_id)
            else:
                ids.extend(self._byte_token(b) for b in symbol.encode("utf-8"))
        return ids

    def _encode_wpm(self, text, _previous_special, out):
        words = self._words
        for word in text.translate(self._wordpiece_table).split(" "):
            if word:
                ids = words.get(word)
                if ids is None:
                    ids = self._remember(word, self._wpm_word(word))
                out.extend(ids)

    def _wpm_word(self, word):
        """Longest tokens first from the left of "▁word"; the unknown token if some piece has none."""
        text, vocab, ids, start = SPACE_MARK + word, self.vocab, [], 0
        while start < len(text):
            for stop in range(min(len(text), start + self._longest_token), start, -1):
                token_id = vocab.get(text[start:stop])
                if token_id is not None:
                    ids.append(token_id)
                    start = stop
                    break
            else:
                return [self.unk_id]
        return ids

    def _byte_token(self, byte):
        token_id = self.vocab.get(f"<0x{byte:02X}>")
        if token_id is None:
            token_id = self.vocab.get(chr(byte))
        if token_id is None:
            raise TokenizerError(f"the vocabulary has no byte token <0x{byte:02X}> for a character it lacks")
        return token_id

    # ---- decoding ----

    def token_bytes(self, token_id: int, special: bool = False) -> bytes:
        """The bytes one token stands for (llama_token_to_piece); control tokens are empty unless `special`."""
        key = (token_id, special)
        piece = self._pieces.get(key)
        if piece is None:
            piece = self._pieces[key] = self._piece(token_id, special)
        return piece

    def _piece(self, token_id, special):
        if not 0 <= token_id < len(self.tokens):
            raise ValueError(f"token id {token_id} is outside the vocabulary (0..{len(self.tokens) - 1})")
        kind, text = int(self.token_types[token_id]), self.tokens[token_id]
        if kind in (CONTROL, UNKNOWN):
            return text.encode("utf-8") if special else b""
        if kind == USER_DEFINED:
            return text.encode("utf-8")
        if kind == NORMAL:
            if self.kind == "gpt2":
                return b"".join(bytes([_CHAR_TO_BYTE[c]]) if c in _CHAR_TO_BYTE else c.encode("utf-8")
                                for c in text)
            return text.replace(SPACE_MARK, " ").encode("utf-8")
        if kind == BYTE and self.kind == "llama":
            return bytes([int(text[3:5], 16)])
        return b""

    def decode(self, ids, special: bool = False) -> str:
        """Text of `ids`; bytes that do not form UTF-8 become U+FFFD."""
        data = b"".join(self.token_bytes(int(i), special) for i in ids)
        if self.add_space_prefix and data.startswith(b" "):
            data = data[1:]   # the space the encoder put in front of the text
        return data.decode("utf-8", errors="replace")

    def incremental_decoder(self, special: bool = False) -> "IncrementalDecoder":
        return IncrementalDecoder(self, special)


class IncrementalDecoder:
    """Token-at-a-time decoding for streaming: a character split across tokens is held until complete."""

    def __init__(self, tokenizer: Tokenizer, special: bool = False):
        self._tokenizer = tokenizer
        self._special = special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = tokenizer.add_space_prefix

    def decode(self, token_id: int) -> str:
        piece = self._tokenizer.token_bytes(int(token_id), self._special)
        if self._at_start and piece:
            self._at_start = False
            if piece.startswith(b" "):
                piece = piece[1:]
        return self._utf8.decode(piece)

    def flush(self) -> str:
        """Whatever is held back (an incomplete character comes out as U+FFFD)."""
        return self._utf8.decode(b"", final=True)
