"""`mlx-d2o sample`: the CLI face of `sample.sample` (parse, merge the recipe, call, print)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

Model = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Embedded name, .gguf, mlx-lm dir or Hub id (also the reference). "
        "(default: smollm2-135m)",
    ),
]
AdapterPath = Annotated[
    Optional[str],
    typer.Option(help="Adapter to generate with; scoring always uses the base model."),
]
Data = Annotated[
    Optional[str],
    typer.Option(help="Records file (.jsonl): prompt/messages, rejected, optional chosen."),
]
Output = Annotated[
    Optional[str], typer.Option("--output", "-o", help="Cache directory to fill (or finish).")
]
NumSamples = Annotated[
    Optional[int],
    typer.Option("--num-samples", "-k", help="K, responses per prompt. (default: 11)"),
]
MaxTokens = Annotated[
    Optional[int], typer.Option(help="Longest response in tokens. (default: 256)")
]
Temp = Annotated[Optional[float], typer.Option(help="Sampling temperature. (default: 1.0)")]
TopP = Annotated[
    Optional[float], typer.Option(help="Nucleus sampling threshold (1 = off). (default: 1.0)")
]
BatchSize = Annotated[
    Optional[int],
    typer.Option(help="Prompts per batch; batch-size x K sequences decode together. (default: 4)"),
]
Seed = Annotated[Optional[int], typer.Option(help="Random seed. (default: 0)")]
SystemPrompt = Annotated[
    Optional[str], typer.Option(help="System prompt used while generating only.")
]
Limit = Annotated[Optional[int], typer.Option(help="Only the first N records.")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace a cache made with other inputs.")
]
SkipLong = Annotated[
    bool,
    typer.Option(
        "--skip-long",
        help="Skip (and count) prompts that leave no room for --max-tokens in the model's "
        "context, instead of refusing the data.",
    ),
]
Dequantize = Annotated[
    Optional[bool],
    typer.Option(
        "--dequantize/--keep-quantized",
        help="Float32 copy of a quantized or half-precision model, or keep it as it is; match "
        "what `train` will use. (default: dequantize on the CPU, keep on a GPU)",
    ),
]
Rescore = Annotated[
    bool,
    typer.Option(
        "--rescore",
        help="Score the finished cache at --output again with its reference, without "
        "generating, and bring an older cache to this format (--model: the one it was made "
        "with, default the manifest's).",
    ),
]
Json = Annotated[
    bool, typer.Option("--json", help="Print the summary as JSON (for scripts) instead of text.")
]
Config = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="YAML recipe (flags win over it).")
]


def command(
    model: Model = None,
    adapter_path: AdapterPath = None,
    data: Data = None,
    output: Output = None,
    num_samples: NumSamples = None,
    max_tokens: MaxTokens = None,
    temp: Temp = None,
    top_p: TopP = None,
    batch_size: BatchSize = None,
    seed: Seed = None,
    system_prompt: SystemPrompt = None,
    limit: Limit = None,
    overwrite: Overwrite = False,
    skip_long: SkipLong = False,
    dequantize: Dequantize = None,
    rescore: Rescore = False,
    json_output: Json = False,
    config: Config = None,
):
    """Generate K responses per prompt, score them with the reference model, and cache them."""
    from ..models import DEFAULT_MODEL
    from ..sample import SampleArgs, sample
    from ..sample.progress import summary_text
    from .common import args_from

    if rescore:
        return _rescore(output, model, config, json_output)
    cli = dict(
        model=model,
        adapter_path=adapter_path,
        data=data,
        output=output,
        num_samples=num_samples,
        max_tokens=max_tokens,
        temp=temp,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        system_prompt=system_prompt,
        limit=limit,
        overwrite=overwrite or None,
        skip_long=skip_long or None,
        dequantize=dequantize,
    )
    args = args_from(SampleArgs, cli, config, "sample", model=DEFAULT_MODEL)
    summary = sample(args)
    if summary.get("rank", 0) != 0:
        return
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
        return
    text, warning = summary_text(summary, int(args.max_tokens))
    typer.echo(text)
    if warning:
        typer.echo(warning, err=True)


def _rescore(output: Optional[str], model: Optional[str], config, json_output: bool) -> None:
    """`--rescore`: only --output and --model (or the recipe's) count; nothing is generated."""
    from ..errors import D2OError
    from ..sample import SampleArgs
    from ..sample.rescore import rescore_cache, rescore_text
    from .common import settings_from

    s = settings_from(SampleArgs, {"model": model, "output": output}, config, "sample")
    if not s.get("output"):
        raise D2OError("--rescore: give the cache to rescore with --output")
    summary = rescore_cache(s["output"], model=s.get("model"))
    typer.echo(json.dumps(summary, indent=2) if json_output else rescore_text(summary))
