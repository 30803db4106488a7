"""The sweep's data (recipes/compare.py --sweep): the HH-RLHF held-out split, JSONL files, and
the sentence sweep.md says about what was trained on and what was held out."""

from __future__ import annotations

import json
from pathlib import Path

HH_SOURCE = "../shared/data/hh-rlhf-harmless-base-test-0-1599.jsonl.gz"
# HH split: train on the first rows, evaluate on rows from HH_TEST_FROM on; rows whose dialogue
# plus longer answer exceed HH_MAX_CHARS are left out of both (keeps the run CPU-sized).
HH_TRAIN_ROWS, HH_TEST_FROM, HH_MAX_CHARS = 800, 1200, 500


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def _chars(r: dict) -> int:
    turns = r.get("messages") or [{"content": r.get("prompt", "")}]
    return sum(len(m["content"]) for m in turns) + max(len(r["rejected"]), len(r.get("chosen", "")))


def split_hh(rows: list[dict], n_train: int, n_test: int) -> tuple[list, list]:
    """(train, test): the first N_TRAIN short rows of the first HH_TRAIN_ROWS, and the first
    N_TEST short rows from row HH_TEST_FROM on: no test row was ever seen in training."""
    short = [i for i, r in enumerate(rows) if _chars(r) <= HH_MAX_CHARS]
    train = [rows[i] for i in short if i < HH_TRAIN_ROWS][:n_train]
    test = [rows[i] for i in short if i >= HH_TEST_FROM][:n_test]
    if len(train) < n_train or len(test) < n_test:
        raise SystemExit(
            f"error: HH split has {len(train)} train / {len(test)} test rows of at most "
            f"{HH_MAX_CHARS} characters; asked for {n_train} / {n_test}"
        )
    return train, test


def describe_data(s, task, files: dict) -> str:
    """One sentence on what was trained on and what was held out, with the record ids."""
    ids = {k: [r["id"] for r in read_jsonl(Path(files[k]))] for k in ("test", "benign")}
    test = f"{ids['test'][0]} … {ids['test'][-1]}"
    if task.name == "hh":
        train = [r["id"] for r in read_jsonl(Path(files["train"]))]
        return (
            f"Data: {s.hh_source} converted by `mlx-d2o data convert --from hh-rlhf`; trained on "
            f"{train[0]} … {train[-1]} (the first {len(train)} rows of at most {HH_MAX_CHARS} "
            f"characters among rows 1-{HH_TRAIN_ROWS}), evaluated on {test} (the first "
            f"{len(ids['test'])} such rows from row {HH_TEST_FROM + 1} on, never trained on); "
            f"drift on {len(ids['benign'])} prompts of {task.benign}."
        )
    return (
        f"Data: trained on the first {s.limit} attacks of {task.train} (its attack styles); "
        f"evaluated on {test}, the first {len(ids['test'])} attacks of {task.test} (other "
        f"attack styles, never trained on); drift and over-refusal on {len(ids['benign'])} "
        f"requests of {task.benign}; a leak is a match of the regex in {task.judge[7:]}."
    )
