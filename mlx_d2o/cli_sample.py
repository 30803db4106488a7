"""`mlx-d2o sample`: parse, merge the recipe, call `sampling.sample`, print the summary."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("sample")
    def sample_cmd(
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Embedded name, .gguf, mlx-lm dir or Hub id (also the reference). (default: smollm2-135m)"),
        adapter_path: Optional[str] = typer.Option(None, help="Adapter to generate with; scoring always uses the base model."),
        data: Optional[str] = typer.Option(None, help="Records file (.jsonl): prompt/messages, rejected, optional chosen."),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Cache directory to fill (or finish)."),
        num_samples: Optional[int] = typer.Option(None, "--num-samples", "-k", help="K, responses per prompt. (default: 11)"),
        max_tokens: Optional[int] = typer.Option(None, help="Longest response in tokens. (default: 256)"),
        temp: Optional[float] = typer.Option(None, help="Sampling temperature. (default: 1.0)"),
        top_p: Optional[float] = typer.Option(None, help="Nucleus sampling threshold (1 = off). (default: 1.0)"),
        batch_size: Optional[int] = typer.Option(None, help="Prompts per batch; batch-size x K sequences decode together. (default: 4)"),
        seed: Optional[int] = typer.Option(None, help="Random seed. (default: 0)"),
        system_prompt: Optional[str] = typer.Option(None, help="System prompt used while generating only."),
        limit: Optional[int] = typer.Option(None, help="Only the first N records."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a cache made with other inputs."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML recipe (flags win over it)."),
    ):
        """Generate K responses per prompt, score them with the reference model, and cache them."""
        from .config import merge
        from .models import DEFAULT_MODEL
        from .sampling import SampleArgs, sample

        cli = dict(model=model, adapter_path=adapter_path, data=data, output=output, num_samples=num_samples,
                   max_tokens=max_tokens, temp=temp, top_p=top_p, batch_size=batch_size, seed=seed,
                   system_prompt=system_prompt, limit=limit, overwrite=overwrite or None)
        defaults = {f.name: f.default for f in fields(SampleArgs) if f.name not in ("model", "data", "output")}
        defaults.update(model=DEFAULT_MODEL, data=None, output=None)
        settings = merge(cli, config, defaults, section="sample")
        summary = sample(SampleArgs(**settings))
        if summary.get("rank", 0) == 0:
            typer.echo(json.dumps(summary, indent=2))
