"""`mlx-d2o plan`: a training step's predicted peak memory, and the settings that fit.

`mlx-d2o plan`: the predicted peak memory of a training step, from the model's config.json
alone (no weights loaded), and the settings that make it fit (`train.plan`).

Token lengths come from a sample cache (the step that peaks: its longest prompts), a records
file, or the command line. Settings come from flags, then the recipe's `train` section (`-c`),
then `mlx-d2o train`'s defaults; K from -k, the recipe's `sample.num_samples`, or the cache.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import ranges
from ..errors import D2OError
from .common import from_recipe
from .common import option as _opt


def mac_limit(ram_gb: float) -> float:
    """The GPU working set of a Mac with RAM_GB (GiB, as sold): macOS wires about 2/3 of it."""
    return ram_gb * 2**30 * 2 / 3


def load_tokenizer(name: str):
    """The tokenizer of NAME without its weights: a Hub id fetches tokenizer files only."""
    from ..models import load_tokenizer as model_tokenizer

    p = Path(name)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")) and not p.exists():
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja"]
        try:
            name = snapshot_download(name, allow_patterns=patterns)
        except Exception as e:  # offline or unknown repo: say what to give instead
            raise D2OError(
                f"could not fetch the tokenizer of {name} from the Hugging Face Hub "
                f"({type(e).__name__}); give --prompt-tokens and --response-tokens instead"
            ) from None
    return model_tokenizer(name)[0]


def _tokenizer_for(model: str, tokenizer: Optional[str], fallback: Optional[str]):
    from ..train.shape import SHIPPED

    name = tokenizer or (fallback if model in SHIPPED or model.endswith(".json") else model)
    if name is None:
        raise D2OError(
            f"--model {model} has no tokenizer to measure prompts with: give --tokenizer "
            "(a model directory or Hub id) or --prompt-tokens and --response-tokens"
        )
    return load_tokenizer(name)


def cache_lengths(
    path: str, model: str, tokenizer: Optional[str], layout: tuple = ()
) -> tuple[list, dict]:
    """[(prompt tokens, longest response tokens)] per row of a sample cache, and its manifest.
    Responses are the counts the reference scored (`ref_tokens`) of the rows in LAYOUT (the
    loss's, `losses.ROWS`: train reads no others; empty: all); prompts are tokenized."""
    from ..data import prompt_tokens
    from ..sample.cache import read_cache

    manifest, rows = read_cache(path)
    tok = _tokenizer_for(model, tokenizer, manifest.get("model"))
    out = []
    for row in rows:
        counts = row["ref_tokens"]
        got = {"samples": counts["samples"], "negative": [counts["rejected"]]}
        got["chosen"] = [counts.get("chosen") or 0]
        longest = max(n for r in layout or got for n in got[r])
        out.append((len(prompt_tokens(tok, row["messages"])), int(longest)))
    return out, manifest


def data_lengths(
    spec: str, model: str, tokenizer: Optional[str], sample_tokens: int, layout: tuple = ()
) -> list:
    """[(prompt tokens, longest response tokens)] per record, of the rows in LAYOUT; samples
    count as SAMPLE_TOKENS (the sample step's --max-tokens: the length a sample may reach)."""
    from ..data import encode_record, load_records

    tok = _tokenizer_for(model, tokenizer, None)
    out = []
    for r in load_records(spec):
        enc = encode_record(tok, r)
        got = {"samples": sample_tokens, "negative": len(enc["rejected"])}
        got["chosen"] = len(enc.get("chosen") or [])
        longest = max(got[row] for row in layout or got)
        out.append((len(enc["prompt"]), longest))
    return out


def peak_lengths(lengths: list, batch_size: int, max_seq_length: int) -> tuple[int, int]:
    """(prompt, response) of the step that peaks: batches group prompts of similar length, so
    the B longest rows share one; responses are cut to fit --max-seq-length as `train` does."""
    top = sorted(lengths, key=lambda pr: sum(pr), reverse=True)[:batch_size]
    prompt = max(p for p, _ in top)
    if prompt >= max_seq_length - 1:
        raise D2OError(f"a prompt of {prompt} tokens fills --max-seq-length {max_seq_length}")
    return prompt, min(max(r for _, r in top), max_seq_length - prompt)


def describe_lengths(lengths: list, source: str) -> str:
    prompts = sorted(p for p, _ in lengths)
    p90 = prompts[min(len(prompts) - 1, int(0.9 * len(prompts)))]
    return (
        f"lengths              {len(lengths)} prompts in {source}: prompt median "
        f"{statistics.median(prompts):.0f}, p90 {p90}, max {prompts[-1]}; longest response "
        f"{max(r for _, r in lengths)}"
    )


def _settings(cli: dict, config: Optional[str]) -> dict:
    """Flags > the recipe's train section > `mlx-d2o train`'s defaults (plan's own keys too)."""
    from ..config import load_recipe, merge
    from ..train import DEFAULTS
    from .train import extra_params

    own = {k: None for k in ("k", "q_bits", "dtype", "chunk_size", "memory_limit", "ram")}
    own.update({n: None for n in extra_params()})  # a loss's own hyperparameters: train's keys
    own.update(step="shared", data=None, prompt_tokens=None, response_tokens=None)
    defaults = {**DEFAULTS, **own, "tokenizer": None}
    s = merge(cli, config, defaults, section="train")
    sample = load_recipe(config).get("sample") if config else None
    sample = sample if isinstance(sample, dict) else {}
    keys = {k: k for k in from_recipe(cli, s, defaults)}
    if s["k"] is None and sample.get("num_samples") is not None:
        s["k"], keys["k"] = sample["num_samples"], "sample.num_samples"
    # before `sample` has run, the recipe's records and --max-tokens give the lengths
    if not s["data"] and sample.get("data") and not (s["samples"] and Path(s["samples"]).exists()):
        s["data"] = sample["data"]
    s["sample_max_tokens"] = sample.get("max_tokens")
    ranges.check("plan", s, config, keys)
    return s


def _lengths(s: dict, layout: tuple) -> tuple[int, int, Optional[str], Optional[int]]:
    """(prompt, response, description, K of the cache) of the step that peaks, for a loss that
    reads the rows in LAYOUT."""
    given = s["prompt_tokens"], s["response_tokens"]
    if all(v is not None for v in given):
        return *given, None, None
    B, L = s["batch_size"], s["max_seq_length"]
    if s["data"]:
        from ..sample.run import SampleArgs

        n = s["response_tokens"] or s.get("sample_max_tokens")
        n = n or SampleArgs.__dataclass_fields__["max_tokens"].default
        rows = data_lengths(s["data"], s["model"], s["tokenizer"], n, layout)
        return *peak_lengths(rows, B, L), describe_lengths(rows, s["data"]), None
    if s["samples"]:
        rows, manifest = cache_lengths(s["samples"], s["model"], s["tokenizer"], layout)
        K = manifest.get("num_samples")
        return *peak_lengths(rows, B, L), describe_lengths(rows, s["samples"]), K
    raise D2OError(
        "no token lengths: give --samples CACHE, --data FILE, or --prompt-tokens N and "
        "--response-tokens N"
    )


def _dequantized_here(s: dict) -> bool:
    """Whether `train` with these settings would dequantize the model: --dequantize, or by
    default on this machine's CPU, when the plan is for this machine (no --ram, no --q-bits or
    --dtype saying how the weights are held)."""
    if s.get("dequantize") is not None:
        return bool(s["dequantize"])
    if s["ram"] or s["q_bits"] is not None or s["dtype"] is not None:
        return False
    from ..models.load import on_cpu

    return on_cpu()


def build_plan(s: dict):
    """The `train.plan.Plan` of merged settings S, and a line on where its lengths came from."""
    from ..losses import get as get_loss
    from ..train.memory import plan_inputs
    from ..train.plan import plan
    from ..train.shape import load_shape

    shape = load_shape(s["model"], s["q_bits"], s["dtype"])
    if _dequantized_here(s):
        shape = shape.as_dequantized()
    layout = get_loss(s["loss"]).layout()
    prompt, response, where, cache_k = _lengths(s, layout)
    k = int(s["k"] or cache_k or 11)
    inputs = plan_inputs(
        shape, layout, k, s, prompt, response, s["chunk_size"], s["step"], int(s["batch_size"])
    )
    limit = s["memory_limit"] * 1e9 if s["memory_limit"] else None
    if s["ram"]:
        limit = mac_limit(s["ram"])
    p = plan(inputs, limit)
    if s["memory_limit"]:
        p.limit_source = "(--memory-limit)"  # as train says it
    if s["ram"]:
        p.limit_source = f"(a {s['ram']:g} GB Mac: 2/3 of its RAM)"
    return p, where


def suggestion_lines(p) -> list[str]:
    """What to change so that the step fits, as flags."""
    from dataclasses import replace

    from ..train.plan import GB, plan

    change = p.suggest()
    if change == {}:
        return []
    if change is None:
        return [
            "suggested            nothing fits: even one sequence at a time, with "
            f"checkpointing and batch 1; the weights alone are {p.breakdown['weights'] / GB:.2f} GB"
        ]
    after = plan(replace(p.inputs, **change), p.memory_limit, p.calibration)
    flags = []
    for k, v in change.items():
        name = "--" + k.replace("_", "-")
        flags.append(name if v is True else f"{name} {v}")
    return [f"suggested            {' '.join(flags)}  (peak {after.total / GB:.2f} GB)"]


Model = _opt(
    str,
    "--model",
    "-m",
    help="Shipped name (mistral-7b, llama-3.1-8b, qwen2.5-7b), config.json, model dir or Hub id.",
)
K = _opt(int, "-k", "--num-samples", help="K, samples per prompt (default: the cache's, else 11).")
BatchSize = _opt(
    int, "--batch-size", help="Prompts per step (each brings K samples + its negative)."
)
Loss = _opt(str, "--loss", help="d2o, d2o-instance, dpo, npo or ga (sequences per prompt).")
FineTuneType = _opt(str, "--fine-tune-type", help="lora | dora | full.")
NumLayers = _opt(int, "--num-layers", help="Number of last layers to train (-1: all).")
LoraRank = _opt(int, "--lora-rank", help="LoRA rank (as train; default 8).")
GradCheckpoint = _opt(
    bool, "--grad-checkpoint/--no-grad-checkpoint", help="Recompute activations in backward."
)
GradAccumulationSteps = _opt(
    int, "--grad-accumulation-steps", help="Steps whose gradients add up to one update."
)
ChunkSize = _opt(int, "--chunk-size", help="Sequences back-propagated at once (default: all).")
Step = _opt(
    str,
    "--step",
    help="shared (prompt once, chunked; default) or full (one pass over whole sequences).",
)
QBits = _opt(int, "--q-bits", help="Quantization bits (default: the config's; 0: float weights).")
Dtype = _opt(str, "--dtype", help="Float type: bfloat16, float16, float32 (the CPU trainer's).")
Samples = _opt(str, "--samples", help="Sample cache: real lengths of its prompts and responses.")
Data = _opt(str, "--data", help="Records file or Hub dataset: its prompts' and negatives' lengths.")
PromptTokens = _opt(int, "--prompt-tokens", help="Longest prompt of a step, in tokens.")
ResponseTokens = _opt(int, "--response-tokens", help="Longest response of a step, in tokens.")
MaxSeqLength = _opt(
    int, "--max-seq-length", help="Longest sequence train keeps (as train; longer are cut)."
)
Tokenizer = _opt(
    str, "--tokenizer", help="Model whose tokenizer measures --samples/--data (default: --model)."
)
MemoryLimit = _opt(
    float, "--memory-limit", help="Gigabytes (default: the device's recommended working set)."
)
Ram = _opt(float, "--ram", help="Plan for a Mac with this many GB of RAM (limit: 2/3 of it).")
Dequantize = _opt(
    bool,
    "--dequantize/--keep-quantized",
    help="As train: plan float32 weights, or the weights as stored (default: dequantize when "
    "planning for this machine's CPU, as train does).",
)
Config = _opt(str, "--config", "-c", help="YAML recipe (its train section); flags win.")


def command(
    model: Model = None,
    k: K = None,
    batch_size: BatchSize = None,
    loss: Loss = None,
    fine_tune_type: FineTuneType = None,
    num_layers: NumLayers = None,
    lora_rank: LoraRank = None,
    grad_checkpoint: GradCheckpoint = None,
    grad_accumulation_steps: GradAccumulationSteps = None,
    chunk_size: ChunkSize = None,
    step: Step = None,
    q_bits: QBits = None,
    dtype: Dtype = None,
    samples: Samples = None,
    data: Data = None,
    prompt_tokens: PromptTokens = None,
    response_tokens: ResponseTokens = None,
    max_seq_length: MaxSeqLength = None,
    tokenizer: Tokenizer = None,
    memory_limit: MemoryLimit = None,
    ram: Ram = None,
    dequantize: Dequantize = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    config: Config = None,
):
    """Predict the peak memory of a training step and the settings that make it fit."""
    cli = {k: v for k, v in locals().items() if k not in ("config", "as_json")}
    s = _settings(cli, config)
    p, where = build_plan(s)
    if as_json:
        from dataclasses import asdict

        out = {"inputs": asdict(p.inputs), "breakdown": p.breakdown, "total": p.total}
        out.update(memory_limit=p.memory_limit, fits=p.fits, suggested=p.suggest())
        typer.echo(json.dumps(out, indent=2))
        return
    for line in p.table()[:4] + ([where] if where else []) + p.table()[4:]:
        typer.echo(line)
    for line in suggestion_lines(p):
        typer.echo(line)
