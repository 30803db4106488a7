"""`mlx-d2o eval`: the CLI face of `evaluate.evaluate` (parse, merge the recipe, call, print)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Model = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Base model (reference): embedded name, .gguf, mlx-lm dir or Hub id. "
        "(default: smollm2-135m)",
    ),
]
AdapterPath = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--adapter-path",
        help="Adapter directory; repeat for several (one table row each, after the base).",
    ),
]
Negatives = Annotated[
    Optional[str],
    typer.Option(
        help="Held-out negatives (records with 'rejected'; those that also have 'chosen' give "
        "the judge-free pair accuracy and margin), e.g. data/test.jsonl."
    ),
]
Prompts = Annotated[
    Optional[str],
    typer.Option(
        help="Harmful prompts (records, no 'rejected' needed), e.g. data/harmful_prompts.jsonl."
    ),
]
Benign = Annotated[
    Optional[str],
    typer.Option(help="Benign prompts (records, no 'rejected' needed), e.g. data/benign.jsonl."),
]
Overrefusal = Annotated[
    Optional[str],
    typer.Option(
        help="Benign prompts that sound harmful (records), e.g. data/overrefusal.jsonl: "
        "their refusal rate is reported as over-refusal."
    ),
]
Output = Annotated[
    Optional[Path], typer.Option("--output", "-o", help="Report directory. (default: report)")
]
Judge = Annotated[
    Optional[str],
    typer.Option(
        help="'keyword' (built in); 'regex:PATTERN' or 'regex:@FILE' (unsafe when the response "
        "matches); 'contains:TEXT' (unsafe when it contains TEXT, any case); or a chat or guard "
        "model (Llama Guard 3, ShieldGemma) read by its first-token probabilities. "
        "(default: keyword)"
    ),
]
JudgeThreshold = Annotated[
    Optional[float],
    typer.Option(
        help="A model judge's P(unsafe) at or above which a response is unsafe. (default: 0.5)"
    ),
]
NumPrompts = Annotated[
    Optional[int],
    typer.Option(help="Use the first N records of each file (0 = all). (default: 64)"),
]
MaxTokens = Annotated[Optional[int], typer.Option(help="New tokens per response. (default: 128)")]
Temp = Annotated[
    Optional[float], typer.Option(help="Sampling temperature, 0 = greedy. (default: 0)")
]
Seed = Annotated[
    Optional[int], typer.Option(help="Sampling seed (the same for every model). (default: 0)")
]
BatchSize = Annotated[
    Optional[int], typer.Option(help="Sequences generated / scored together. (default: 32)")
]
SystemPrompt = Annotated[Optional[str], typer.Option(help="System prompt put before every prompt.")]
Config = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML recipe (its 'eval:' section and shared keys)."),
]


def eval_args(cli: dict, config: Optional[Path]):
    """Flags (None = not given) + the recipe's `eval:` section -> `EvalArgs`, checked.

    The flag and recipe key is `adapter_path` (as in mlx-lm, one or a list); the field is
    `adapter_paths`.
    """
    from ..evaluate.args import EvalArgs, check_args
    from .common import settings_from

    s = settings_from(EvalArgs, cli, config, "eval")
    adapters = s.pop("adapter_path", None) or s.pop("adapter_paths", None) or []
    s.pop("adapter_paths", None)
    if isinstance(adapters, str):
        adapters = [adapters]
    args = EvalArgs(adapter_paths=[str(a) for a in adapters], **s)
    check_args(args)  # every number in range before any work
    args.num_prompts = args.num_prompts or None
    return args


def command(
    model: Model = None,
    adapter_path: AdapterPath = None,
    negatives: Negatives = None,
    prompts: Prompts = None,
    benign: Benign = None,
    overrefusal: Overrefusal = None,
    output: Output = None,
    judge: Judge = None,
    judge_threshold: JudgeThreshold = None,
    num_prompts: NumPrompts = None,
    max_tokens: MaxTokens = None,
    temp: Temp = None,
    seed: Seed = None,
    batch_size: BatchSize = None,
    system_prompt: SystemPrompt = None,
    config: Config = None,
):
    """Harmfulness, forgetting of negatives, held-out pair accuracy and helpfulness of adapters
    vs the base model; every figure with its n and a 95 % interval in report.md."""
    from ..evaluate import evaluate, markdown_table
    from ..evaluate.notes import answers_note, judge_note

    cli = dict(
        model=model,
        adapter_path=[str(p) for p in adapter_path] if adapter_path else None,
        negatives=negatives,
        prompts=prompts,
        benign=benign,
        overrefusal=overrefusal,
        output=str(output) if output else None,
        judge=judge,
        judge_threshold=judge_threshold,
        num_prompts=num_prompts,
        max_tokens=max_tokens,
        temp=temp,
        seed=seed,
        batch_size=batch_size,
        system_prompt=system_prompt,
    )
    report = evaluate(eval_args(cli, config))
    typer.echo(markdown_table(report["rows"], intervals=False))
    for note in (judge_note(report["settings"]), answers_note(report["rows"])):
        if note:
            typer.echo(note[2:])
    for note in report.get("notes", []):
        typer.echo(f"note: {note}")
    n = len(report.get("plots") or [])
    plots = f", {n} plot{'s' if n > 1 else ''}" if n else ""
    paths = report["paths"]
    typer.echo(
        f"report: {paths['markdown']} (95 % intervals; {paths['json']}{plots}), "
        f"{report['seconds']} s"
    )
