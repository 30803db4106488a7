"""The tokenizer of a GGUF export: `tokenizer.*` metadata as llama.cpp reads it.

Two kinds, as llama.cpp has them: byte-level BPE (`gpt2`: GPT-2, SmolLM2, Llama 3; tokens,
merges and a pre-tokenizer name) and sentencepiece-style BPE (`llama`: Llama 2, Mistral,
TinyLlama; tokens with scores, `<0xNN>` byte tokens, a space prefix). A Hugging Face
`tokenizer.json` has merges but no sentencepiece scores: a token's score is minus the rank of
the merge that makes it, which is the order both llama.cpp's tokenizer and mlx-d2o's import
(`models.gguf`) merge in.

What cannot be written in llama.cpp's terms is refused: the settings a GGUF leaves open (the
pre-tokenizer name, the space prefix) are chosen as the first under which the tokenizer rebuilt
from the metadata by mlx-d2o's import encodes `CHECK_TEXT` and the special tokens exactly as the
model's own tokenizer does.
"""

from __future__ import annotations

import json
import re

from ..errors import D2OError
from ..models.gguf import _gguf_tokenizer

# Text whose tokenization must survive the trip through the GGUF metadata: words, digits,
# contractions, runs of spaces and newlines, accents (byte-level BPE splits these differently
# under each of llama.cpp's pre-tokenizers).
CHECK_TEXT = "Hello World! It's 2024: 12345 apples,  3.14\n\n\tdon't Ünïcødé   ok?"
# llama.cpp's pre-tokenizer names (llama-vocab.cpp) that `models.gguf` also rebuilds.
PRE_TOKENIZERS = ("gpt-2", "smollm", "llama-bpe")
# gguf.TokenType: NORMAL 1, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6
NORMAL, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 3, 4, 5, 6
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _hf(tokenizer):
    """The Hugging Face tokenizer under mlx-lm's TokenizerWrapper."""
    return getattr(tokenizer, "_tokenizer", tokenizer)


def lacks_merges(tokenizer) -> bool:
    """Byte-level BPE without merges: the GGUF then has no `tokenizer.ggml.merges`, which
    llama.cpp requires of a `gpt2` vocabulary."""
    model = json.loads(_hf(tokenizer).backend_tokenizer.to_str()).get("model", {})
    return not model.get("byte_fallback") and not model.get("merges")


def _vocab(hf, spec: dict, vocab_size: int, byte_tokens: bool) -> tuple[list, list]:
    """Tokens by id and their GGUF types; ids the embedding has beyond the tokenizer's are
    `[PADn]` placeholders (llama.cpp wants one token per embedding row, as its converter)."""
    vocab = hf.backend_tokenizer.get_vocab(with_added_tokens=True)
    n = max(vocab.values()) + 1
    if n > vocab_size:
        raise D2OError(
            f"--export-gguf: the tokenizer has {n} tokens but the model only {vocab_size} "
            "embedding rows"
        )
    tokens = [None] * vocab_size
    for t, i in vocab.items():
        tokens[i] = t
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    types = []
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i] = f"[PAD{i}]"
            types.append(UNUSED)
        elif i in added:
            types.append(CONTROL if added[i].get("special") else USER_DEFINED)
        elif byte_tokens and _BYTE_TOKEN.fullmatch(t):
            types.append(BYTE)
        else:
            types.append(NORMAL)
    return tokens, types


def _adds(hf, token_id) -> tuple[bool, bool]:
    """(adds BOS, adds EOS): what the tokenizer puts around a plain encode, as llama.cpp's
    `add_bos_token` / `add_eos_token` say."""
    with_specials = hf("a")["input_ids"]
    plain = hf("a", add_special_tokens=False)["input_ids"]
    extra = len(with_specials) > len(plain)
    bos = extra and token_id("bos") is not None and with_specials[0] == token_id("bos")
    eos = extra and token_id("eos") is not None and with_specials[-1] == token_id("eos")
    return bool(bos), bool(eos)


def _merges(model: dict) -> list:
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]


def _scores(tokens: list, merges: list):
    """Sentencepiece scores from merge ranks: the token the r-th merge makes scores -r; tokens
    no merge makes (bytes, single characters, specials) score below every merge."""
    import numpy as np

    rank = {}
    for r, m in enumerate(merges):
        rank.setdefault(m.replace(" ", "", 1), r)
    floor = -float(len(merges) + 1)
    return np.array([-float(rank[t]) if t in rank else floor for t in tokens], dtype=np.float32)


def tokenizer_meta(tokenizer, vocab_size: int) -> dict:
    """The `tokenizer.*` metadata of TOKENIZER, keyed as in a GGUF file (see the module)."""
    import numpy as np

    hf = _hf(tokenizer)
    spec = json.loads(hf.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise D2OError(
            f"--export-gguf: {model.get('type')} tokenizers are not supported (BPE only: "
            "byte-level as GPT-2, SmolLM2 and Llama 3, or sentencepiece-style as Llama 2)"
        )
    piece = bool(model.get("byte_fallback"))  # sentencepiece-style: bytes as <0xNN> tokens
    tokens, types = _vocab(hf, spec, vocab_size, byte_tokens=piece)

    def token_id(kind):
        return getattr(hf, f"{kind}_token_id", None)

    bos, eos = _adds(hf, token_id)
    merges = _merges(model)
    meta = {
        "tokenizer.ggml.model": "llama" if piece else "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
        "tokenizer.ggml.add_bos_token": bos,
        "tokenizer.ggml.add_eos_token": eos,
    }
    if piece:
        meta["tokenizer.ggml.scores"] = _scores(tokens, merges)
    else:
        meta["tokenizer.ggml.merges"] = merges
    for kind, key in [("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")]:
        if token_id(kind) is not None:
            meta[f"tokenizer.ggml.{key}_token_id"] = int(token_id(kind))
    if hf.chat_template:
        meta["tokenizer.chat_template"] = hf.chat_template
    key, candidates = (
        ("tokenizer.ggml.add_space_prefix", (True, False))
        if piece
        else ("tokenizer.ggml.pre", PRE_TOKENIZERS)
    )
    meta[key] = _first_matching(hf, meta, key, candidates)
    return meta


def _first_matching(hf, meta: dict, key: str, candidates: tuple):
    """The first value of KEY under which the importer's rebuilt tokenizer pre-tokenizes and
    encodes the check text as HF does."""
    backend = hf.backend_tokenizer
    types = meta["tokenizer.ggml.token_type"]
    specials = [t for t, ty in zip(meta["tokenizer.ggml.tokens"], types) if ty == CONTROL][:4]
    text = CHECK_TEXT + "".join(f"{s}x {i}" for i, s in enumerate(specials))
    want = backend.encode(text, add_special_tokens=False).ids
    pre = backend.pre_tokenizer
    pieces = [p for p, _ in pre.pre_tokenize_str(CHECK_TEXT)] if pre else None
    for value in candidates:
        rebuilt = _gguf_tokenizer({**meta, key: value})
        if pieces is not None and rebuilt.pre_tokenizer is not None:
            if [p for p, _ in rebuilt.pre_tokenizer.pre_tokenize_str(CHECK_TEXT)] != pieces:
                continue
        if rebuilt.encode(text, add_special_tokens=False).ids == want:
            return value
    what = "llama.cpp's pre-tokenizers" if key.endswith(".pre") else "sentencepiece's settings"
    raise D2OError(
        f"--export-gguf: the tokenizer splits text unlike any of {what} the exporter knows "
        f"({', '.join(map(str, candidates))}); llama.cpp would tokenize differently"
    )


def add_tokenizer(writer, meta: dict) -> None:
    """META (`tokenizer_meta`) into the gguf package's writer."""
    writer.add_tokenizer_model(meta["tokenizer.ggml.model"])
    if "tokenizer.ggml.pre" in meta:
        writer.add_tokenizer_pre(meta["tokenizer.ggml.pre"])
    writer.add_token_list(meta["tokenizer.ggml.tokens"])
    writer.add_token_types([int(t) for t in meta["tokenizer.ggml.token_type"]])
    if "tokenizer.ggml.scores" in meta:
        writer.add_token_scores([float(s) for s in meta["tokenizer.ggml.scores"]])
        writer.add_add_space_prefix(meta["tokenizer.ggml.add_space_prefix"])
    if "tokenizer.ggml.merges" in meta:
        writer.add_token_merges(meta["tokenizer.ggml.merges"])  # an empty list writes no key
    for key, add in [
        ("bos_token_id", writer.add_bos_token_id),
        ("eos_token_id", writer.add_eos_token_id),
        ("unknown_token_id", writer.add_unk_token_id),
        ("padding_token_id", writer.add_pad_token_id),
    ]:
        if f"tokenizer.ggml.{key}" in meta:
            add(meta[f"tokenizer.ggml.{key}"])
    writer.add_add_bos_token(meta["tokenizer.ggml.add_bos_token"])
    writer.add_add_eos_token(meta["tokenizer.ggml.add_eos_token"])
    if "tokenizer.chat_template" in meta:
        writer.add_chat_template(meta["tokenizer.chat_template"])
