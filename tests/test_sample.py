"""`mlx-d2o sample` on the tiny random model: cache shape, reference scores, resume, refusals."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import needs_smollm2, write_jsonl

from mlx_d2o.data import load_records, prompt_tokens, response_tokens
from mlx_d2o.errors import D2OError
from mlx_d2o.models import load
from mlx_d2o.sample import SampleArgs, adapters_disabled, generate_samples, sample
from mlx_d2o.sample.cache import MANIFEST, SAMPLES, read_cache, resume_shard

CLI = [sys.executable, "-m", "mlx_d2o.cli"]


def _args(model, data, out, **kw) -> SampleArgs:
    base = dict(
        model=str(model),
        data=str(data),
        output=str(out),
        num_samples=3,
        max_tokens=8,
        temp=1.0,
        top_p=1.0,
        batch_size=3,
        seed=0,
    )
    base.update(kw)
    return SampleArgs(**base)


def _independent_logp(model, prompt: list[int], response: list[int]) -> float:
    """log π(response | prompt) from one plain forward pass, summed in float64 with NumPy."""
    tokens = prompt + response
    logits = np.array(model(mx.array([tokens[:-1]]))[0].astype(mx.float32), dtype=np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    targets = tokens[1:]
    return float(sum(logp[t, targets[t]] for t in range(len(prompt) - 1, len(tokens) - 1)))


def _sample_response(tok, row: dict, k: int, prompt: list[int]) -> list[int]:
    """Sample K's tokens as scored: a finished one as the template writes its text, a cut one
    exactly the MAX_TOKENS ids it was generated as, which decode to its text, no end-of-turn."""
    if row["sample_finish"][k] != "length":
        return response_tokens(tok, row["messages"], row["samples"][k], prompt)
    ids = row["sample_ids"][k]
    assert tok.decode(ids) == row["samples"][k] and tok.eos_token_id not in ids
    return ids


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return load(str(tiny_model))


@pytest.mark.parametrize("system_prompt", [None, "Be harmless."])
def test_cache_shapes_and_scores(tiny_model, records_file, tmp_path, tiny, system_prompt):
    # Without a system prompt the generator's own log-probs and prompt caches are reused for
    # scoring; with one, everything is scored after the record's own prompt.
    out = tmp_path / "cache"
    summary = sample(
        _args(tiny_model, records_file, out, system_prompt=system_prompt), progress=False
    )
    manifest, rows = read_cache(out)

    assert (
        manifest["complete"] is True and manifest["records"] == 8 and manifest["num_samples"] == 3
    )
    assert manifest["system_prompt"] == system_prompt
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(8)]
    assert summary["records"] == 8 and summary["samples"] == 24
    records = {r.id: r for r in load_records(records_file)}
    model, tok = tiny
    for row in rows:
        rec = records[row["id"]]
        # The cached prompt is the record's own: the system prompt was for generating only.
        assert (
            row["messages"] == rec.messages
            and row["rejected"] == rec.rejected
            and row["chosen"] == rec.chosen
        )
        assert len(row["samples"]) == len(row["sample_tokens"]) == len(row["sample_finish"]) == 3
        assert set(row["sample_finish"]) <= {"stop", "length"}
        assert all(
            1 <= n <= 9 for n in row["sample_tokens"]
        )  # 8 tokens, plus end-of-turn when it stopped
        assert all(
            n == 8 for n, f in zip(row["sample_tokens"], row["sample_finish"]) if f == "length"
        )
        lps = row["ref_logps"]["samples"] + [
            row["ref_logps"]["rejected"],
            row["ref_logps"]["chosen"],
        ]
        assert all(math.isfinite(x) and x <= 0 for x in lps)
        p = prompt_tokens(tok, rec.messages)
        for name in ("rejected", "chosen"):
            resp = response_tokens(tok, rec.messages, getattr(rec, name), p)
            assert row["ref_tokens"][name] == len(resp)
        for k, n in enumerate(row["ref_tokens"]["samples"]):
            assert n == len(_sample_response(tok, row, k, p))

    # The stored reference score equals an independent forward pass over the training prompt.
    for row in rows:  # prompts of different lengths, single- and multi-turn
        p = prompt_tokens(tok, row["messages"])
        for resp, lp in zip(
            [_sample_response(tok, row, 0, p)]
            + [response_tokens(tok, row["messages"], row[n], p) for n in ("rejected", "chosen")],
            row["ref_logps"]["samples"][:1]
            + [row["ref_logps"]["rejected"], row["ref_logps"]["chosen"]],
        ):
            want = _independent_logp(model, p, resp)
            assert lp == pytest.approx(want, rel=1e-4, abs=1e-3)


def test_generate_samples_deterministic_and_leaves_global_rng(tiny, records_file):
    model, tok = tiny
    recs = load_records(records_file)[:3]
    mx.random.seed(123)
    before = mx.random.uniform(shape=(2,)).tolist()
    mx.random.seed(123)
    a = generate_samples(model, tok, recs, 2, 6, 1.0, 1.0, 2, seed=7)
    after = mx.random.uniform(shape=(2,)).tolist()
    b = generate_samples(model, tok, recs, 2, 6, 1.0, 1.0, 2, seed=7)
    c = generate_samples(model, tok, recs, 2, 6, 1.0, 1.0, 2, seed=8)
    assert before == after  # generation draws from its own key, not the caller's random state
    assert a == b
    assert a != c
    assert len(a) == 3 and all(len(g["samples"]) == 2 for g in a)
    # The K samples of one prompt are drawn independently, not copies of each other.
    assert any(len(set(g["samples"])) > 1 for g in a)


def test_greedy_shared_prefill_matches_mlx_lm(tiny, records_file):
    """Prefilling a prompt once for its K sequences gives what plain mlx-lm generation gives."""
    from mlx_lm.generate import batch_generate

    model, tok = tiny
    recs = load_records(records_file)[:3]
    ours = generate_samples(model, tok, recs, 2, 10, 0.0, 1.0, 3, seed=0)
    prompts = [prompt_tokens(tok, r.messages) for r in recs]
    plain = batch_generate(model, tok, prompts, max_tokens=10, return_token_ids=True)
    for g, text in zip(ours, plain.texts):
        assert g["samples"] == [text, text]


def test_generator_logps_are_reference_scores(tiny, records_file):
    """The log-probs kept from generation equal a forward pass over prompt + generated ids +
    end-of-turn, for stopped and for cut responses alike."""
    model, tok = tiny
    recs = load_records(records_file)[:2]
    gens = generate_samples(model, tok, recs, 3, 5, 1.0, 1.0, 2, seed=1, return_logps=True)
    eot = tok.eos_token_id
    for rec, g in zip(recs, gens):
        p = prompt_tokens(tok, rec.messages)
        for d, finish in zip(g["_draws"], g["sample_finish"]):
            assert finish == "stop" or len(d.ids) == 5
            kept = sum(d.logps) + d.end[eot]
            assert kept == pytest.approx(
                _independent_logp(model, p, d.ids + [eot]), rel=1e-4, abs=1e-3
            )


def test_known_score_only_for_identical_tokens():
    from mlx_d2o.generation import Draw
    from mlx_d2o.sample.scoring import known_score

    d = Draw(ids=[5, 6], logps=[-1.0, -2.0], end={2: -0.5}, finish="length")
    assert known_score(d, [5, 6, 2]) == -3.5
    assert known_score(d, [5, 7, 2]) is None  # re-tokenized differently: score it again
    assert known_score(d, [5, 6]) == -3.0  # a cut sample's prefix, as it was generated
    assert known_score(d, [5]) is None
    assert known_score(d, [5, 6, 3]) is None
    assert known_score(None, [5, 6, 2]) is None


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _many_records(tmp_path, n=24) -> Path:
    return write_jsonl(
        tmp_path / "many.jsonl",
        [{"id": f"m{i}", "prompt": f"Say {i}.", "rejected": f"No {i}."} for i in range(n)],
    )


def test_resume_after_kill_gives_the_same_cache(tiny_model, tmp_path):
    data = _many_records(tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    sample(_args(tiny_model, data, whole, batch_size=1, max_tokens=16), progress=False)

    cmd = CLI + [
        "sample",
        "-m",
        str(tiny_model),
        "--data",
        str(data),
        "-o",
        str(killed),
        "-k",
        "3",
        "--max-tokens",
        "16",
        "--temp",
        "1.0",
        "--top-p",
        "1.0",
        "--batch-size",
        "1",
        "--seed",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = killed / SAMPLES
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if shard.exists() and shard.stat().st_size > 0:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert shard.exists() and 0 < len(_lines(shard)) < 24, "the run was not killed midway"
    assert json.loads((killed / MANIFEST).read_text())["complete"] is False
    with pytest.raises(D2OError, match="incomplete"):
        read_cache(killed)

    # Tear the last line as a kill inside a write would.
    with open(shard, "ab") as f:
        f.write(b'{"id": "m9", "samp')
    summary = sample(_args(tiny_model, data, killed, batch_size=1, max_tokens=16), progress=False)
    assert summary["resumed_batches"] >= 1 and summary["dropped_lines"] >= 1
    assert (killed / SAMPLES).read_bytes() == (whole / SAMPLES).read_bytes()
    assert [r["id"] for r in read_cache(killed)[1]] == [f"m{i}" for i in range(24)]


def test_resume_drops_half_written_batch(tmp_path):
    """Lines of a batch that never finished are cut off, so the batch is redone whole."""
    path = write_jsonl(tmp_path / SAMPLES, [{"id": "a"}, {"id": "b"}, {"id": "c"}])
    with open(path, "ab") as f:
        f.write(b'{"id": "d"')
    done, dropped = resume_shard(path, [["a", "b"], ["c", "d"], ["e"]])
    assert (done, dropped) == (1, 2)
    assert _lines(path) == ['{"id": "a"}', '{"id": "b"}']
    # Lines past the last expected batch, or that are not JSON, are never kept.
    write_jsonl(path, [{"id": "a"}, "not json", {"id": "x"}])
    assert resume_shard(path, [["a"]]) == (1, 2)
    assert resume_shard(path, [["a"], ["b"]]) == (1, 0)
    assert _lines(path) == ['{"id": "a"}']
    assert resume_shard(path, []) == (0, 1) and path.read_bytes() == b""


def test_mismatched_cache_refused(tiny_model, records_file, tmp_path):
    out = tmp_path / "cache"
    sample(_args(tiny_model, records_file, out, limit=3), progress=False)
    with pytest.raises(D2OError, match="num_samples: cached 3, now 2"):
        sample(_args(tiny_model, records_file, out, limit=3, num_samples=2), progress=False)
    with pytest.raises(D2OError, match="temp"):
        sample(_args(tiny_model, records_file, out, limit=3, temp=0.5), progress=False)
    other = write_jsonl(
        tmp_path / "other.jsonl",
        [{"id": f"r{i}", "prompt": "Changed?", "rejected": "x"} for i in range(3)],
    )
    with pytest.raises(D2OError, match="data_fingerprint"):
        sample(_args(tiny_model, other, out), progress=False)
    # A rerun with the same inputs is a no-op; --overwrite replaces the cache.
    assert (
        sample(_args(tiny_model, records_file, out, limit=3), progress=False)["resumed_batches"]
        == 1
    )
    sample(
        _args(tiny_model, records_file, out, limit=3, num_samples=2, overwrite=True), progress=False
    )
    manifest, rows = read_cache(out)
    assert manifest["num_samples"] == 2 and all(len(r["samples"]) == 2 for r in rows)


def test_read_cache_refuses_missing_and_unscored(tiny_model, records_file, tmp_path):
    with pytest.raises(D2OError, match="no sample cache"):
        read_cache(tmp_path / "nothing")
    out = tmp_path / "cache"
    sample(_args(tiny_model, records_file, out, limit=2, num_samples=1), progress=False)
    rows = [json.loads(line) for line in _lines(out / SAMPLES)]
    del rows[1]["ref_logps"]
    write_jsonl(out / SAMPLES, rows)
    with pytest.raises(D2OError, match="reference scores"):
        read_cache(out)


def test_bad_arguments(tiny_model, records_file, tmp_path):
    with pytest.raises(D2OError, match="num-samples"):
        sample(_args(tiny_model, records_file, tmp_path / "c", num_samples=0), progress=False)
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(D2OError, match="no records"):
        sample(_args(tiny_model, empty, tmp_path / "c"), progress=False)
    with pytest.raises(D2OError, match="no such file"):
        sample(_args(tiny_model, tmp_path / "missing.jsonl", tmp_path / "c"), progress=False)
    with pytest.raises(D2OError, match="--output: .* is a file"):
        sample(_args(tiny_model, records_file, records_file), progress=False)
    assert not (tmp_path / "c").exists()


def test_cli_errors_exit_2(tiny_model, tmp_path):
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    for extra, msg in ((["-k", "0"], "K must be at least 1"), ([], "no records")):
        r = subprocess.run(
            CLI
            + [
                "sample",
                "-m",
                str(tiny_model),
                "--data",
                str(empty),
                "-o",
                str(tmp_path / "c"),
                *extra,
            ],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 2 and "error: " in r.stderr and msg in r.stderr, r.stderr


def _make_adapter(model, path: Path) -> None:
    """A LoRA adapter with non-zero B, saved as mlx-lm writes one."""
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    params = {"rank": 4, "scale": 10.0, "dropout": 0.0}
    model.freeze()
    linear_to_lora_layers(model, 2, params)
    mx.random.seed(3)
    lora = {
        k: (mx.random.normal(v.shape) * 0.5 if k.endswith("lora_b") else v)
        for k, v in tree_flatten(model.trainable_parameters())
    }
    path.mkdir(parents=True)
    mx.save_safetensors(str(path / "adapters.safetensors"), lora)
    (path / "adapter_config.json").write_text(
        json.dumps({"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": params})
    )


def test_adapter_generates_but_base_scores(tiny_model, records_file, tmp_path):
    base, tok = load(str(tiny_model))
    _make_adapter(load(str(tiny_model))[0], tmp_path / "adapter")
    adapted, _ = load(str(tiny_model), adapter_path=str(tmp_path / "adapter"))
    recs = load_records(records_file)[:2]
    p = prompt_tokens(tok, recs[0].messages)
    x = mx.array([p])
    assert not mx.allclose(adapted(x), base(x), atol=1e-3)  # the adapter does change the model
    with adapters_disabled(adapted):
        assert mx.array_equal(adapted(x), base(x))
    assert not mx.allclose(adapted(x), base(x), atol=1e-3)  # and is back afterwards

    out = tmp_path / "cache"
    sample(
        _args(tiny_model, records_file, out, limit=2, adapter_path=str(tmp_path / "adapter")),
        progress=False,
    )
    manifest, rows = read_cache(out)
    assert manifest["adapter_fingerprint"]
    row = rows[0]
    want = _independent_logp(base, p, _sample_response(tok, row, 0, p))
    assert row["ref_logps"]["samples"][0] == pytest.approx(want, rel=1e-4, abs=1e-3)
    # Samples come from the adapted model: greedy answers differ from the base's.
    g_base = generate_samples(base, tok, recs, 1, 12, 0.0, 1.0, 2, seed=0)
    g_adapted = generate_samples(adapted, tok, recs, 1, 12, 0.0, 1.0, 2, seed=0)
    assert g_base != g_adapted


@needs_smollm2
@pytest.mark.real_model
def test_smollm2_sample(tmp_path):
    data = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "id": "a",
                "prompt": "What is the capital of France?",
                "rejected": "Berlin, obviously.",
                "chosen": "Paris.",
            },
            {"id": "b", "prompt": "Say hello.", "rejected": "No."},
        ],
    )
    out = tmp_path / "cache"
    # Through the CLI, as a user runs it: it re-executes itself with OpenBLAS (in-process tests
    # keep MLX's reference BLAS, ~30x slower on SmolLM2).
    env = {k: v for k, v in os.environ.items() if k != "MLX_D2O_NO_BLAS_REEXEC"}
    r = subprocess.run(
        CLI
        + [
            "sample",
            "-m",
            "smollm2-135m",
            "--data",
            str(data),
            "-o",
            str(out),
            "-k",
            "2",
            "--max-tokens",
            "12",
            "--temp",
            "0.7",
            "--batch-size",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "2.0/2 prompts" in r.stderr and "tok/s" in r.stderr  # the progress bar
    assert "2 prompts x 2 = 4 samples" in r.stdout  # the summary, for people
    summary = json.loads((out / "summary.json").read_text())
    manifest, rows = read_cache(out)
    assert summary["samples"] == 4 and len(rows) == 2
    for row in rows:
        assert all(s.strip() for s in row["samples"])  # a real model answers in text
        lps = row["ref_logps"]["samples"] + [row["ref_logps"]["rejected"]]
        assert all(math.isfinite(x) and x < 0 for x in lps)
    # The real model finds its right answer likelier than the wrong one.
    assert rows[0]["ref_logps"]["chosen"] > rows[0]["ref_logps"]["rejected"]
    # A sample cut at 12 tokens is scored as those 12 generated ids, without end-of-turn.
    model, tok = load("smollm2-135m")
    cut = [(r, k) for r in rows for k, f in enumerate(r["sample_finish"]) if f == "length"]
    assert cut
    for row, k in cut:
        ids = row["sample_ids"][k]
        assert len(ids) == 12 and tok.eos_token_id not in ids
        want = _independent_logp(model, prompt_tokens(tok, row["messages"]), ids)
        # float32 rounding over 30 layers: the generator's batched pass against a plain one
        assert row["ref_logps"]["samples"][k] == pytest.approx(want, abs=5e-3)


def test_read_manifest_lenient(tmp_path):
    """Not strict (the model card): any JSON object, else None; strict refuses what is not ours."""
    from mlx_d2o.sample.cache import read_manifest

    assert read_manifest(tmp_path, strict=False) is None
    (tmp_path / MANIFEST).write_text('{"num_samples": 3}')
    assert read_manifest(tmp_path, strict=False) == {"num_samples": 3}
    with pytest.raises(D2OError, match="format_version"):
        read_manifest(tmp_path)
    for bad in (b"[1]", b"{torn", b"\xff{"):
        (tmp_path / MANIFEST).write_bytes(bad)
        assert read_manifest(tmp_path, strict=False) is None
