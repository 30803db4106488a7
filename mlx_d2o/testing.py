"""Tiny random llama models for tests and benchmarks: a real mlx-lm directory, built offline.

The tokenizer is byte-level (256 byte tokens plus ChatML's specials), so any text encodes and
the chat template behaves like SmolLM2's; the weights are random, so text it generates is noise.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


# A few GPT-2-style merges (Ġ is the byte-level space), for a tokenizer that exercises BPE
# merging: llama.cpp refuses a byte-level BPE vocabulary without merges (`fuse --export-gguf`).
TINY_MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("Ġ", "a")]


def tiny_tokenizer(merges: bool = False, vocab_size: int = 0):
    """The byte-level ChatML tokenizer; MERGES: with `TINY_MERGES` (their tokens come after the
    bytes, so the first 259 ids are the same either way); VOCAB_SIZE above its size adds
    two-byte merges up to that size, so that every id a random model of that vocabulary
    samples decodes to text."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from .models.gguf import _bytes_to_unicode

    alphabet = [c for _, c in sorted(_bytes_to_unicode().items())]
    pairs = list(TINY_MERGES) if merges else []
    vocab = {t: i for i, t in enumerate(SPECIALS + alphabet + [a + b for a, b in pairs])}
    more = ((a, b) for a in alphabet for b in alphabet if a + b not in vocab)
    pairs += [next(more) for _ in range(max(0, vocab_size - len(vocab)))]
    for a, b in pairs:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )
    hf.chat_template = CHATML_TEMPLATE
    return hf


def make_tiny_model(
    path: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    tie_word_embeddings: bool = False,
    quantize: bool = False,
    context: int = 1024,
    dtype: str = "float32",
    merges: bool = False,
    tokenizer=None,
) -> Path:
    """Write a random llama model directory at PATH that `mlx_lm.load` reads; DTYPE: the
    floating weights' (with QUANTIZE, the scales' and biases' too: 'bfloat16' gives the 4-bit
    bf16-scales layout of mlx-community's models); MERGES: see `tiny_tokenizer`; TOKENIZER: a
    Hugging Face tokenizer instead of it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama
    from mlx_lm.utils import quantize_model, save_config

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = tokenizer if tokenizer is not None else tiny_tokenizer(merges)
    config = {
        "model_type": "llama",
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "intermediate_size": intermediate_size,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "rms_norm_eps": 1e-5,
        "vocab_size": len(tok),
        "rope_theta": 10000.0,
        "max_position_embeddings": context,
        "tie_word_embeddings": tie_word_embeddings,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.set_dtype(getattr(mx, dtype))
    mx.eval(model.parameters())
    if quantize:
        model, config = quantize_model(model, config, group_size=32, bits=4)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    save_config(config, path / "config.json")
    tok.save_pretrained(str(path))
    return path


def make_random_model(path: str | Path, config: dict, seed: int = 0) -> Path:
    """Write a model directory at PATH of CONFIG's architecture and shape (e.g. a shipped
    config.json, `train.plan.SHIPPED`) with random weights in its `torch_dtype`, quantized as its
    `quantization` says, and the byte-level tokenizer grown to its vocabulary (nothing fetched).
    Each layer is cast as it is made: a 7B shape peaks at its 16-bit size, not float32's."""
    import mlx.core as mx
    from mlx_lm.utils import _get_classes, quantize_model, save_config, save_model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    quant = config.get("quantization") or {}
    config = {k: v for k, v in config.items() if k not in ("quantization", "quantization_config")}
    tok = tiny_tokenizer(vocab_size=int(config["vocab_size"]))
    config.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model_cls, args_cls = _get_classes(config)
    mx.random.seed(seed)
    model = model_cls(args_cls.from_dict(config))
    dtype = getattr(mx, str(config.get("torch_dtype") or "float32"))
    for _, module in model.named_modules():
        if not module.children():  # a leaf: its weights are made, cast, and kept
            module.set_dtype(dtype)
            mx.eval(module.parameters())
    if quant.get("bits"):
        model, config = quantize_model(model, config, quant.get("group_size", 64), quant["bits"])
    save_model(path, model)
    save_config(config, path / "config.json")
    tok.save_pretrained(str(path))
    return path
