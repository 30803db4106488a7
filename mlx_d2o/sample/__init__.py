"""`mlx-d2o sample`: K self-generated responses per prompt (D2O's π_r anchors), scored by the
reference model, cached to disk so that training never runs a reference forward pass.

    generate.py   K samples per prompt through `generation.generate` (keyed sampler per batch)
    scoring.py    reference scores: reused from generation when they are known, else after
                  each record's prompt run once
    cache.py      the cache format's one owner: manifest, shards, summary.json, resume,
                  `read_cache`; a failed write is cut back and said in one line
    checks.py     refusals before any work: settings out of range, an --output that cannot be
                  written, prompts too long for the context (or skipped with --skip-long)
    progress.py   the bar (moves with every decoding step, tokens/s) and the end summary
    rescore.py    `sample --rescore`: a finished cache's reference scores again, no generation
                  (an older format's cache brought to this one)
    run.py        `SampleArgs` and `sample()`, the command as a library call (ranks, resume,
                  the cache's lock, a clean stop on SIGINT / SIGTERM)

The trainer's online refresh samples and scores through `generate_samples` and
`score_records`; `train` and `fuse` read a cache through `read_cache` / `read_manifest`.
"""

from ..adapters import adapters_disabled
from .cache import (
    FORMAT_VERSION,
    MANIFEST,
    SAMPLES,
    read_cache,
    read_manifest,
    resume_shard,
    shard_name,
    write_manifest,
)
from .checks import check_args
from .generate import batch_seed, generate_samples
from .progress import summarize, summary_text
from .run import SampleArgs, build_manifest, sample
from .scoring import computes_in_float32, known_score, score_after_prompts, score_records

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "SAMPLES",
    "SampleArgs",
    "adapters_disabled",
    "batch_seed",
    "build_manifest",
    "check_args",
    "computes_in_float32",
    "generate_samples",
    "known_score",
    "read_cache",
    "read_manifest",
    "resume_shard",
    "sample",
    "score_after_prompts",
    "score_records",
    "shard_name",
    "summarize",
    "summary_text",
    "write_manifest",
]
