"""`mlx-d2o eval`: the CLI face of `evaluate.evaluate` (parse, merge the recipe, call, print)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import D2OError

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
    typer.Option(help="Held-out negatives (records with 'rejected'), e.g. data/test.jsonl."),
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
Output = Annotated[
    Optional[Path], typer.Option("--output", "-o", help="Report directory. (default: report)")
]
Judge = Annotated[
    Optional[str],
    typer.Option(
        help="'keyword' (built in) or a chat model (e.g. a Llama Guard) as judge. "
        "(default: keyword)"
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
    from ..evaluate import EvalArgs
    from .common import settings_from

    s = settings_from(EvalArgs, cli, config, "eval")
    adapters = s.pop("adapter_path", None) or s.pop("adapter_paths", None) or []
    s.pop("adapter_paths", None)
    if isinstance(adapters, str):
        adapters = [adapters]
    if s["num_prompts"] is not None and s["num_prompts"] < 0:
        raise D2OError("--num-prompts must be >= 0 (0 = all)")
    if s["max_tokens"] < 1 or s["batch_size"] < 1:
        raise D2OError("--max-tokens and --batch-size must be >= 1")
    s["num_prompts"] = s["num_prompts"] or None
    return EvalArgs(adapter_paths=[str(a) for a in adapters], **s)


def command(
    model: Model = None,
    adapter_path: AdapterPath = None,
    negatives: Negatives = None,
    prompts: Prompts = None,
    benign: Benign = None,
    output: Output = None,
    judge: Judge = None,
    num_prompts: NumPrompts = None,
    max_tokens: MaxTokens = None,
    temp: Temp = None,
    seed: Seed = None,
    batch_size: BatchSize = None,
    system_prompt: SystemPrompt = None,
    config: Config = None,
):
    """Harmfulness, forgetting of negatives and helpfulness retention of adapters vs the base model."""
    from ..evaluate import evaluate, markdown_table

    cli = dict(
        model=model,
        adapter_path=[str(p) for p in adapter_path] if adapter_path else None,
        negatives=negatives,
        prompts=prompts,
        benign=benign,
        output=str(output) if output else None,
        judge=judge,
        num_prompts=num_prompts,
        max_tokens=max_tokens,
        temp=temp,
        seed=seed,
        batch_size=batch_size,
        system_prompt=system_prompt,
    )
    report = evaluate(eval_args(cli, config))
    typer.echo(markdown_table(report["rows"]))
    for note in report.get("notes", []):
        typer.echo(f"note: {note}")
    plots = f", {len(report['plots'])} plots" if report.get("plots") else ""
    paths = report["paths"]
    typer.echo(f"report: {paths['markdown']} ({paths['json']}{plots}), {report['seconds']} s")
