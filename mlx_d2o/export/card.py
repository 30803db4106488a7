"""The fused model's card (README.md): front matter, training, eval, weights, use.

The fused model's card (README.md): Hub front matter (YAML), then what the model is, how it
was trained, how it did in `mlx-d2o eval`, how its weights are stored and how to load it.

`model_card` only formats: the facts come in as arguments (see `provenance` for where they are
read). It never publishes a local path: local models and data files appear by their names only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from .hub import HUB_ID

FTYPE_NAMES = {"lora": "LoRA adapter", "dora": "DoRA adapter", "full": "full fine-tune"}

# Labels for the `d2o` block the trainer writes into adapter_config.json, in the card's order
# (older or hand-written adapters may use the alternative names).
D2O_FIELDS = [
    (("loss",), "loss"),
    (("alpha",), "α (weight of the human negative)"),
    (("beta",), "β"),
    (("K", "num_samples"), "K (self-generated samples per prompt)"),
    (("steps",), "steps trained"),
    (("iters",), "steps planned"),
    (("batch_size",), "batch size"),
    (("grad_accumulation_steps",), "gradient accumulation steps"),
    (("refresh_every",), "samples refreshed from the policy (online)"),
    (("data_fingerprint",), "data fingerprint"),
    (("base_model",), "trained on base"),
    (("base_model_fingerprint", "base_fingerprint"), "base model fingerprint at training"),
    (("dequantized",), "trained on the base dequantized to float"),
    (("world_size",), "processes (data parallel)"),
]


def d2o_block(adapter_config: dict) -> dict:
    """The `d2o` block of an adapter config ({} for adapters made by other tools)."""
    d2o = adapter_config.get("d2o")
    return d2o if isinstance(d2o, dict) else {}


def fmt(v) -> str:
    """A table cell: floats to 4 significant digits, `|` escaped."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


# ---------------------------------------------------------------------------------------------
# Hub datasets
# ---------------------------------------------------------------------------------------------


def hub_dataset(spec) -> Optional[str]:
    """`org/name` from a Hub dataset spec (`org/name[:split]`); None for a local file."""
    if not isinstance(spec, str) or Path(spec).exists():
        return None
    repo = spec.split(":", 1)[0]
    if not HUB_ID.match(repo) or re.search(r"\.(jsonl?|gz|csv|parquet)$", repo):
        return None
    return repo


def datasets_of(d2o: dict, manifest: dict) -> list:
    """The Hub datasets the adapter was trained on (its config's, then the sample cache's)."""
    ds = d2o.get("datasets", d2o.get("dataset"))
    ds = [ds] if isinstance(ds, str) else ds if isinstance(ds, list) else []
    ds = ds + [manifest.get("data")]
    # Only Hub dataset ids belong in `datasets:`; a local file path would be rejected by the Hub.
    out = [hub_dataset(d) for d in ds]
    return list(dict.fromkeys(d for d in out if d))


# ---------------------------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------------------------


def front_matter(base_model, license, adapter_config: dict, datasets: list) -> dict:
    """The Hub's metadata block: base model, library, task, licence, tags, datasets."""
    ftype = adapter_config.get("fine_tune_type", "lora")
    meta = {}
    if base_model:
        meta["base_model"] = base_model
    meta["library_name"] = "mlx"
    meta["pipeline_tag"] = "text-generation"
    if license:
        meta["license"] = license
    tags = ["mlx", "d2o", "alignment"] + ([ftype] if ftype in ("lora", "dora") else [])
    loss = d2o_block(adapter_config).get("loss")
    if isinstance(loss, str) and loss not in tags:
        tags.append(loss)
    meta["tags"] = tags
    if datasets:
        meta["datasets"] = datasets
    return meta


def _d2o_rows(d2o: dict) -> list:
    """(label, value) of the `d2o` block: known fields in D2O_FIELDS' order, then the rest."""
    rows, used = [], {"dataset", "datasets", "samples"}
    for keys, label in D2O_FIELDS:
        key = next((k for k in keys if d2o.get(k) is not None), None)
        used.update(keys)
        v = d2o.get(key)
        if key == "base_model" and isinstance(v, str) and (Path(v).exists() or v[:1] in "/~."):
            rows.append((label, f"`{Path(v).name}` (a local model)"))  # not the user's layout
        elif key == "refresh_every":
            offline = "no (offline: samples of the starting model)"
            rows.append((label, f"every {v} steps" if v else offline))
        elif key is not None:
            rows.append((label, v))
    extra = (int, float, str, bool)
    return rows + [(k, v) for k, v in d2o.items() if k not in used and isinstance(v, extra)]


def _data_rows(manifest: dict, datasets: list) -> list:
    """(label, value) of the data: Hub datasets, the local negatives file, the samples (π_r)."""
    rows = []
    if datasets:
        rows.append(("datasets", ", ".join(datasets)))
    if manifest.get("data") and not hub_dataset(manifest["data"]):
        # a local file: its name only (a full path would publish the user's directory layout)
        n = manifest.get("records")
        name = f"`{Path(str(manifest['data'])).name}`"
        rows.append(("negatives", name + (f", {n} records" if n else "")))
    if manifest.get("num_samples"):
        m = manifest
        rows.append(
            (
                "self-generated samples (π_r)",
                f"K={m['num_samples']}, temperature {m.get('temp', '?')}, "
                f"top-p {m.get('top_p', '?')}, at most {m.get('max_tokens', '?')} tokens",
            )
        )
    return rows


def layers_trained(num_layers) -> str:
    """mlx-lm's `num_layers` in words: -1 means every layer (its convention), N the last N."""
    if isinstance(num_layers, int) and num_layers < 0:
        return "all layers"
    if num_layers is None:
        return "last ? layers"
    return f"last {num_layers} layer{'' if num_layers == 1 else 's'}"


def training_rows(adapter_config: dict, metrics: dict, manifest: dict, datasets: list) -> list:
    """(label, value) rows of the card's Training table."""
    d2o, ftype = d2o_block(adapter_config), adapter_config.get("fine_tune_type", "lora")
    rows = _d2o_rows(d2o)
    if not d2o and "iters" in adapter_config:
        rows.append(("steps", adapter_config["iters"]))
    rows += _data_rows(manifest, datasets)
    lp = adapter_config.get("lora_parameters") or {}
    if ftype != "full":
        rows.append(
            (
                "adapter",
                f"{ftype}, rank {lp.get('rank', '?')}, scale {lp.get('scale', '?')}, "
                f"{layers_trained(adapter_config.get('num_layers'))}",
            )
        )
    for k in ("learning_rate", "batch_size", "seed"):
        if k in adapter_config and k not in d2o:
            rows.append((k.replace("_", " "), adapter_config[k]))
    for kind in ("train", "val"):
        if kind in metrics:
            v, step = metrics[kind]
            at = f" (step {step})" if step is not None else ""
            rows.append((f"final {kind} loss", f"{fmt(float(v))}{at}"))
    if not d2o:
        rows.append(("note", "adapter_config.json has no `d2o` block: training settings unknown"))
    return rows


# How `fuse --adapted-layers` stored the layers the adapter changed, for the card.
ADAPTED_WORDS = {
    "8bit": "8-bit",
    "float": "kept in float",
    "requant": "quantized afresh at the base's bits",
    "grid": "rounded onto the base's own grid",
}


def _quantization_line(quantization, dtype: str, adapted: Optional[str]) -> str:
    if not quantization:
        return f"- quantization: not quantized ({dtype})"
    q = f"{quantization.get('bits')}-bit affine, group size {quantization.get('group_size')}"
    if adapted:
        q += (
            f"; the layers the adapter changed: {ADAPTED_WORDS.get(adapted, adapted)} "
            f"(`mlx-d2o fuse --adapted-layers {adapted}`)"
        )
    if quantization.get("per_layer"):
        q += " (per-layer settings: see `quantization` in config.json)"
    return f"- quantization: {q}"


def _weights_lines(quantization, dtype: str, facts: dict, fingerprints: dict) -> list:
    """## Weights: how they are stored, how close they are to base + adapter, fingerprints."""
    lines = ["", "## Weights", "", _quantization_line(quantization, dtype, facts.get("adapted"))]
    fidelity, changed = facts.get("fidelity"), facts.get("changed")
    if fidelity:
        lines.append(
            f"- fidelity: KL(base + adapter ‖ this model) = {fidelity['kl_per_token']:.2g} nats "
            f"per token, over the full vocabulary at {fidelity['tokens']} teacher-forced response "
            f"tokens of {fidelity['source']} (measured by `mlx-d2o fuse`; 0 = identical)"
        )
    if changed is not None:
        lines.append(
            f"- adapted weights whose quantized value the update moved: {changed:.2%}"
            + (" (the rest of the update was finer than the grid)" if changed < 0.05 else "")
        )
    gguf = facts.get("gguf")
    if gguf:
        line = f"- GGUF for llama.cpp, Ollama and LM Studio: `{gguf['file']}` ({gguf['type']})"
        if "kl_per_token" in gguf:
            line += (
                f"; KL(base + adapter ‖ the GGUF) = {gguf['kl_per_token']:.2g} nats per token on "
                "the same tokens, the file loaded back through MLX's GGUF reader"
            )
        lines.append(line)
    return lines + [f"- {k}: `{v}`" for k, v in fingerprints.items()]


def _llama_cpp_lines(gguf: Optional[dict]) -> list:
    if not gguf:
        return []
    return [
        "## Use with llama.cpp",
        "",
        "```bash",
        f"llama-cli -m {gguf['file']} -cnv",
        "```",
        "",
    ]


def _usage_lines(name: str) -> list:
    return [
        "",
        "## Use with mlx",
        "",
        "```bash",
        "pip install mlx-lm",
        "```",
        "",
        "```python",
        "from mlx_lm import load, generate",
        "",
        f'model, tokenizer = load("{name}")',
        'messages = [{"role": "user", "content": "hello"}]',
        "prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)",
        "print(generate(model, tokenizer, prompt=prompt, max_tokens=128))",
        "```",
        "",
    ]


def model_card(
    *,
    name: str,
    base_model: Optional[str],
    base_label: str,
    license: Optional[str],
    adapter_config: dict,
    metrics: dict,
    eval_table: Optional[str],
    quantization: Optional[dict],
    dtype: str,
    fingerprints: dict,
    changed: Optional[float] = None,
    manifest: Optional[dict] = None,
    fidelity: Optional[dict] = None,
    adapted: Optional[str] = None,
    gguf: Optional[dict] = None,
) -> str:
    """README.md: Hub front matter (YAML) and Markdown with the training settings, eval results
    and how the weights are stored (CHANGED, FIDELITY, ADAPTED, GGUF: as `fuse` measured them)."""
    import yaml

    manifest = manifest or {}
    datasets = datasets_of(d2o_block(adapter_config), manifest)
    meta = front_matter(base_model, license, adapter_config, datasets)
    ftype = adapter_config.get("fine_tune_type", "lora")
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [f"# {name}", ""]
    lines += [
        f"This model is {base_label} aligned with **Distributional Dispreference Optimization** "
        "(D2O; Duan et al., 2024, [arXiv:2403.03419](https://arxiv.org/abs/2403.03419)) using only "
        "human-labelled *negative* responses, with mlx-d2o on MLX. "
        f"The {FTYPE_NAMES.get(ftype, ftype)} is fused into the weights: it loads as a standalone "
        "model.",
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    rows = training_rows(adapter_config, metrics, manifest, datasets)
    lines += [f"| {label} | {fmt(v)} |" for label, v in rows]
    if eval_table:
        requant = " (the fused weights are quantized, which moves the numbers by about the "
        requant += "fidelity figure under Weights)."
        lines += ["", "## Evaluation", ""]
        lines += [
            "Measured with the adapter applied to the base, before fusing"
            + (requant if quantization else "."),
            "",
            eval_table,
        ]
    facts = {"changed": changed, "fidelity": fidelity, "adapted": adapted, "gguf": gguf}
    lines += _weights_lines(quantization, dtype, facts, fingerprints)
    lines += _usage_lines(name) + _llama_cpp_lines(gguf)
    return "\n".join(lines)
