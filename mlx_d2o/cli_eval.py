"""`mlx-d2o eval`: the CLI face of `evaluate.evaluate` (parse, merge the recipe, call, print)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

import typer

from .errors import D2OError


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Base model (reference): embedded name, .gguf, mlx-lm dir or Hub id. (default: smollm2-135m)"),
        adapter_path: Optional[List[Path]] = typer.Option(None, "--adapter-path", help="Adapter directory; repeat for several (one table row each, after the base)."),
        negatives: Optional[str] = typer.Option(None, help="Held-out negatives (records with 'rejected'), e.g. data/test.jsonl."),
        prompts: Optional[str] = typer.Option(None, help="Harmful prompts (records, no 'rejected' needed), e.g. data/harmful_prompts.jsonl."),
        benign: Optional[str] = typer.Option(None, help="Benign prompts (records, no 'rejected' needed), e.g. data/benign.jsonl."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Report directory. (default: report)"),
        judge: Optional[str] = typer.Option(None, help="'keyword' (built in) or a chat model (e.g. a Llama Guard) as judge. (default: keyword)"),
        num_prompts: Optional[int] = typer.Option(None, help="Use the first N records of each file (0 = all). (default: 64)"),
        max_tokens: Optional[int] = typer.Option(None, help="New tokens per response. (default: 128)"),
        temp: Optional[float] = typer.Option(None, help="Sampling temperature, 0 = greedy. (default: 0)"),
        seed: Optional[int] = typer.Option(None, help="Sampling seed (the same for every model). (default: 0)"),
        batch_size: Optional[int] = typer.Option(None, help="Sequences generated / scored together. (default: 32)"),
        system_prompt: Optional[str] = typer.Option(None, help="System prompt put before every prompt."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML recipe (its 'eval:' section and shared keys)."),
    ):
        """Harmfulness, forgetting of negatives and helpfulness retention of adapters vs the base model."""
        from .config import merge
        from .evaluate import EvalArgs, evaluate, markdown_table

        defaults = asdict(EvalArgs())
        defaults["adapter_path"] = defaults.pop("adapter_paths")
        cli = dict(model=model, adapter_path=[str(p) for p in adapter_path] if adapter_path else None,
                   negatives=negatives, prompts=prompts, benign=benign, output=str(output) if output else None,
                   judge=judge, num_prompts=num_prompts, max_tokens=max_tokens, temp=temp, seed=seed,
                   batch_size=batch_size, system_prompt=system_prompt)
        s = merge(cli, config, defaults, section="eval")
        adapters = s.pop("adapter_path") or []
        if isinstance(adapters, str):
            adapters = [adapters]
        if s["num_prompts"] is not None and s["num_prompts"] < 0:
            raise D2OError("--num-prompts must be >= 0 (0 = all)")
        if s["max_tokens"] < 1 or s["batch_size"] < 1:
            raise D2OError("--max-tokens and --batch-size must be >= 1")
        s["num_prompts"] = s["num_prompts"] or None
        report = evaluate(EvalArgs(adapter_paths=[str(a) for a in adapters], **s))
        typer.echo(markdown_table(report["rows"]))
        for note in report.get("notes", []):
            typer.echo(f"note: {note}")
        typer.echo(f"report: {report['paths']['markdown']} ({report['paths']['json']}"
                   + (f", {len(report['plots'])} plots" if report.get("plots") else "") + f"), {report['seconds']} s")
