"""A sample cut at --max-tokens is a prefix: scored and trained on exactly the tokens the model
generated, no end-of-turn; a finished one keeps its end-of-turn. Older caches are refused and
can be rescored without generating again.

The model is the tiny random llama with its end-of-turn row of `lm_head` set to 1.05 x the row
of a token that greedy decoding picks on some prompts and not on others: those prompts stop
there, the others run into --max-tokens, so one greedy cache holds both kinds. The expected
tokens come from a greedy loop written here (a full forward pass per token, no KV cache).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import run_cli, write_jsonl

MAX_TOKENS = 8
K = 2
LN2 = math.log(2.0)


def _prompt(tok, messages) -> list:
    return list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))


def _greedy(model, prompt: list, steps: int, eot: int) -> list:
    out = []
    for _ in range(steps):
        t = int(mx.argmax(model(mx.array([prompt + out]))[0, -1]))
        out.append(t)
        if t == eot:
            break
    return out


def _logp(model, prompt: list, response: list) -> float:
    """log π(response | prompt): one plain forward pass, log-softmax and sum in float64."""
    tokens = prompt + response
    logits = np.array(model(mx.array([tokens[:-1]]))[0].astype(mx.float32), dtype=np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return float(sum(logp[t, tokens[t + 1]] for t in range(len(prompt) - 1, len(tokens) - 1)))


def _template_response(tok, messages, text: str, eot: int) -> list:
    """TEXT as the chat template writes it after the prompt, through its end-of-turn."""
    p = _prompt(tok, messages)
    full = list(
        tok.apply_chat_template(messages + [{"role": "assistant", "content": text}], tokenize=True)
    )
    assert full[: len(p)] == p
    resp = full[len(p) :]
    return resp[: resp.index(eot) + 1]


@pytest.fixture(scope="module")
def stopping(tiny_model, tmp_path_factory):
    """(model dir, records file, {id: expected response tokens or None if cut}): a tiny model
    that stops on some of the records and not on others, and its greedy answers."""
    import mlx_lm

    records = [
        {"id": f"q{i}", "prompt": f"Question number {i}?", "rejected": "No."} for i in range(8)
    ]
    base = tmp_path_factory.mktemp("stop")
    data = write_jsonl(base / "records.jsonl", records)
    model, tok = mlx_lm.load(str(tiny_model))
    eot = tok.eos_token_id
    msgs = {r["id"]: [{"role": "user", "content": r["prompt"]}] for r in records}
    runs = {i: _greedy(model, _prompt(tok, m), MAX_TOKENS, eot) for i, m in msgs.items()}
    counts = {t: sum(t in r for r in runs.values()) for r in runs.values() for t in r}
    alias = max((t for t, c in counts.items() if c < len(runs)), key=lambda t: counts[t])
    out = base / "model"
    shutil.copytree(tiny_model, out)
    weights = dict(mx.load(str(out / "model.safetensors")))
    w = np.array(weights["lm_head.weight"])
    w[eot] = 1.05 * w[alias]
    weights["lm_head.weight"] = mx.array(w)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    model, tok = mlx_lm.load(str(out))
    # One step past --max-tokens: an end-of-turn right after the last allowed token is a stop.
    want = {}
    for i, m in msgs.items():
        ids = _greedy(model, _prompt(tok, m), MAX_TOKENS + 1, eot)
        want[i] = ("stop", ids) if ids[-1] == eot else ("length", ids[:MAX_TOKENS])
    kinds = {kind for kind, _ in want.values()}
    assert kinds == {"stop", "length"}, want  # the cache below holds both kinds
    return out, data, msgs, want


@pytest.fixture(scope="module")
def greedy_cache(stopping, tmp_path_factory) -> Path:
    from mlx_d2o.sample import SampleArgs, sample

    model_dir, data, _, _ = stopping
    out = tmp_path_factory.mktemp("gc") / "cache"
    args = SampleArgs(
        model=str(model_dir),
        data=str(data),
        output=str(out),
        num_samples=K,
        max_tokens=MAX_TOKENS,
        temp=0.0,
        batch_size=4,
    )
    sample(args, progress=False)
    return out


def _rows(cache: Path) -> list:
    return [json.loads(line) for line in (cache / "samples.jsonl").read_text().splitlines()]


def test_cut_sample_is_scored_as_generated_and_finished_keeps_end_of_turn(stopping, greedy_cache):
    import mlx_lm

    model_dir, _, msgs, want = stopping
    model, tok = mlx_lm.load(str(model_dir))
    eot = tok.eos_token_id
    for row in _rows(greedy_cache):
        kind, ids = want[row["id"]]
        p = _prompt(tok, msgs[row["id"]])
        assert row["sample_finish"] == [kind] * K
        for k in range(K):
            if kind == "length":  # exactly the MAX_TOKENS generated ids: no end-of-turn
                tokens = ids
            else:
                assert tok.decode(ids[:-1]) == row["samples"][k]
                tokens = _template_response(tok, msgs[row["id"]], row["samples"][k], eot)
                assert tokens[-1] == eot
            assert row["ref_tokens"]["samples"][k] == len(tokens)
            # The step-0 policy is the model itself: its log-prob of those tokens is the cache's.
            assert row["ref_logps"]["samples"][k] == pytest.approx(
                _logp(model, p, tokens), rel=1e-4, abs=1e-4
            )
            if kind == "length":
                assert row["sample_ids"][k] == ids and eot not in ids


def _train_args(model_dir, cache, out, **kw):
    from mlx_d2o.train import TrainArgs

    base = dict(
        model=str(model_dir),
        samples=str(cache),
        adapter_path=str(out),
        batch_size=8,  # every prompt, cut and finished, in the first step
        num_layers=2,
        learning_rate=1e-3,
        steps_per_report=1,
        save_every=0,
        iters=1,
        alpha=0.1,
        beta=0.1,
    )
    return TrainArgs(**{**base, **kw})


def _first_loss(out: Path) -> float:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return next(line for line in lines if line["split"] == "train")["loss"]


@pytest.mark.parametrize("loss", ["d2o", "d2o-instance"])
def test_training_sees_the_prefix_and_step0_loss_is_ln2(stopping, greedy_cache, tmp_path, loss):
    import mlx_lm

    from mlx_d2o.train import train
    from mlx_d2o.train.examples import build_examples, read_cache

    model_dir, _, msgs, want = stopping
    _, tok = mlx_lm.load(str(model_dir))
    eot = tok.eos_token_id
    _, rows = read_cache(greedy_cache)
    examples, _ = build_examples(rows, tok, _train_args(model_dir, greedy_cache, tmp_path), "c")
    for ex in examples:
        kind, ids = want[ex.id]
        for k, tokens in enumerate(ex.samples):
            text = ex.row["samples"][k]
            if kind == "length":
                assert tokens[-1] != eot  # a cut sample is trained without end-of-turn
            expected = ids if kind == "length" else _template_response(tok, msgs[ex.id], text, eot)
            assert tokens == expected  # the policy is trained on the tokens the cache scored

    out = tmp_path / "a"
    train(_train_args(model_dir, greedy_cache, out, loss=loss), log=lambda s: None)
    assert _first_loss(out) == pytest.approx(LN2, abs=1e-5)


def _make_old(cache: Path, dest: Path) -> Path:
    """CACHE as format 1 wrote it: no `sample_ids`, and stale reference scores."""
    shutil.copytree(cache, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    (dest / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    rows = []
    for row in _rows(cache):
        row.pop("sample_ids")
        row["ref_logps"]["samples"] = [x - 1.0 for x in row["ref_logps"]["samples"]]
        rows.append(row)
    write_jsonl(dest / "samples.jsonl", rows)
    return dest


def test_older_cache_refused_in_one_line(stopping, greedy_cache, tmp_path, capsys):
    model_dir, data, _, _ = stopping
    old = _make_old(greedy_cache, tmp_path / "old")
    for cmd in (
        ["train", "--model", model_dir, "--samples", old, "--adapter-path", tmp_path / "a"],
        ["sample", "--model", model_dir, "--data", data, "-o", old],
    ):
        code, _, err = run_cli(cmd, capsys)
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err
        assert "format_version" in lines[0] and f"mlx-d2o sample --rescore -o {old}" in lines[0]
    assert not (tmp_path / "a" / "adapters.safetensors").exists()


def test_rescore_brings_an_older_cache_to_the_prefix_rule(stopping, greedy_cache, tmp_path, capsys):
    import mlx_lm

    from mlx_d2o.sample.cache import FORMAT_VERSION, read_cache
    from mlx_d2o.train import train

    model_dir, _, msgs, want = stopping
    old = _make_old(greedy_cache, tmp_path / "old")
    code, out, err = run_cli(["sample", "--rescore", "-o", old], capsys)
    assert code == 0, err
    assert "rescored 8 prompts" in out and "format 2 (was 1)" in out
    manifest, rows = read_cache(old)
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert manifest["rescored"]["from_format_version"] == 1
    model, tok = mlx_lm.load(str(model_dir))
    eot = tok.eos_token_id
    for row in rows:
        kind, _ = want[row["id"]]
        p = _prompt(tok, msgs[row["id"]])
        for k, text in enumerate(row["samples"]):
            tokens = _template_response(tok, msgs[row["id"]], text, eot)
            if kind == "length":  # format 1 scored these with end-of-turn: not any more
                tokens = tokens[:-1]
                assert row["sample_ids"][k] == tokens
            assert row["ref_tokens"]["samples"][k] == len(tokens)
            assert row["ref_logps"]["samples"][k] == pytest.approx(
                _logp(model, p, tokens), rel=1e-4, abs=1e-4
            )
    train(_train_args(model_dir, old, tmp_path / "t"), log=lambda s: None)
    assert _first_loss(tmp_path / "t") == pytest.approx(LN2, abs=1e-5)


def test_rescore_refuses_another_model_and_an_unfinished_cache(
    stopping, greedy_cache, tiny_model, tmp_path, capsys
):
    old = _make_old(greedy_cache, tmp_path / "old")
    before = (old / "samples.jsonl").read_bytes()
    code, _, err = run_cli(["sample", "--rescore", "-o", old, "--model", tiny_model], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "made with another model" in err
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    code, _, err = run_cli(["sample", "--rescore", "-o", old], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "incomplete" in err
    assert (old / "samples.jsonl").read_bytes() == before  # nothing rewritten
    code, _, err = run_cli(["sample", "--rescore"], capsys)
    assert code == 2 and "--output" in err
