"""`mlx-d2o sample`: K self-generated responses per prompt (D2O's π_r anchors), scored by the
reference model, cached to disk so that training never runs a reference forward pass.

    generate.py   K samples per prompt through `generation.generate` (keyed sampler per batch)
    scoring.py    reference scores: reused from generation when they are known, else after
                  each record's prompt run once
    cache.py      the cache format's one owner: manifest, shards, resume, `read_cache`
    run.py        `SampleArgs` and `sample()`, the command as a library call (ranks, resume)

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
from .generate import batch_seed, generate_samples
from .run import SampleArgs, build_manifest, check_args, sample, summarize
from .scoring import known_score, score_after_prompts, score_records

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "SAMPLES",
    "SampleArgs",
    "adapters_disabled",
    "batch_seed",
    "build_manifest",
    "check_args",
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
    "write_manifest",
]
