"""`mlx-d2o sample` when things go wrong: a second run on the same cache, Ctrl-C / SIGTERM, a
corrupt adapter, a prompt longer than the context, a full / read-only / impossible --output,
settings out of range; and what it tells the user: progress as tokens come, a summary.
Also the reference scores, computed like training's, on bf16 and quantized models.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import mlx.core as mx
import pytest
from conftest import run_cli, write_jsonl
from test_sample import CLI, _args  # the same small sample settings

from mlx_d2o.errors import D2OError
from mlx_d2o.io import RunLock
from mlx_d2o.sample import sample
from mlx_d2o.sample.cache import MANIFEST, SAMPLES, read_cache


def _flags(model, data, out, *extra) -> list[str]:
    return [
        "sample",
        "-m",
        str(model),
        "--data",
        str(data),
        "-o",
        str(out),
        "-k",
        "3",
        "--max-tokens",
        "16",
        "--batch-size",
        "1",
        "--seed",
        "0",
        *map(str, extra),
    ]


def _many(tmp_path, n=24, **extra) -> Path:
    return write_jsonl(
        tmp_path / "many.jsonl",
        [{"id": f"m{i}", "prompt": f"Say {i}.", "rejected": f"No {i}.", **extra} for i in range(n)],
    )


def _said(err: str) -> list[str]:
    """What a command wrote to stderr, the progress bar's frames left out."""
    lines = [x.strip() for x in err.replace("\r", "\n").splitlines()]
    return [x for x in lines if x and not x.startswith("sample:")]


def _one_error(code: int, err: str) -> str:
    said = _said(err)
    assert code == 2 and len(said) == 1 and said[0].startswith("error: "), err
    return said[0]


def _wait_for_lines(path: Path, proc, timeout=90.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.stat().st_size > 0:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} got no line before the run ended (rc {proc.poll()})")


def _whole_lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "a torn line was left behind"
    return [json.loads(line) for line in raw.splitlines()]


# ---------------------------------------------------------------------------------------------
# Two runs at once; Ctrl-C and SIGTERM
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_rerun_resumes(tiny_model, tmp_path, signum):
    data = _many(tmp_path)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    sample(_args(tiny_model, data, whole, batch_size=1, max_tokens=16), progress=False)

    env = dict(os.environ, MLX_D2O_NO_BLAS_REEXEC="1")
    cmd = CLI + _flags(tiny_model, data, stopped)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        _wait_for_lines(stopped / SAMPLES, proc)
        if signum == signal.SIGINT:
            # A second run on the same cache is refused at once, naming the first.
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
            assert r.returncode == 2, r.stderr
            assert f"pid {proc.pid}" in r.stderr and "another sample run" in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "same command" in err, err
    assert "Traceback" not in err, err
    rows = _whole_lines(stopped / SAMPLES)
    assert 0 < len(rows) < 24, "the run was not stopped midway"
    assert json.loads((stopped / MANIFEST).read_text())["complete"] is False

    # The same command again: the stopped cache is finished, no row lost or repeated.
    summary = sample(_args(tiny_model, data, stopped, batch_size=1, max_tokens=16), progress=False)
    assert summary["dropped_lines"] == 0  # the stopped run left only whole batches
    assert (stopped / SAMPLES).read_bytes() == (whole / SAMPLES).read_bytes()


def test_lock_refuses_a_second_run_before_loading(tiny_model, records_file, tmp_path):
    out = tmp_path / "cache"
    with RunLock(out, "sample run"):
        with pytest.raises(D2OError, match=f"pid {os.getpid()}"):
            # A model that does not exist: the lock is refused before anything is loaded.
            sample(_args(tmp_path / "no-model", records_file, out), progress=False)
    assert not (out / SAMPLES).exists() and not (out / MANIFEST).exists()
    sample(_args(tiny_model, records_file, out, limit=2), progress=False)  # free again


# ---------------------------------------------------------------------------------------------
# Corrupt adapter, long prompts
# ---------------------------------------------------------------------------------------------


def _adapter(tiny_model, path: Path) -> Path:
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from mlx_d2o.models import load

    model, _ = load(str(tiny_model))
    params = {"rank": 4, "scale": 10.0, "dropout": 0.0}
    model.freeze()
    linear_to_lora_layers(model, 2, params)
    path.mkdir(parents=True)
    mx.save_safetensors(
        str(path / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters()))
    )
    (path / "adapter_config.json").write_text(
        json.dumps({"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": params})
    )
    return path


@pytest.mark.parametrize("damage", ["truncated", "flipped header"])
def test_corrupt_adapter_one_line(tiny_model, records_file, tmp_path, capsys, damage):
    ad = _adapter(tiny_model, tmp_path / "adapter")
    f = ad / "adapters.safetensors"
    raw = bytearray(f.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[12] ^= 0xFF  # inside the JSON header
    f.write_bytes(bytes(raw))
    code, out, err = run_cli(
        _flags(tiny_model, records_file, tmp_path / "c", "--adapter-path", ad), capsys
    )
    assert str(f) in _one_error(code, err)


def _long_data(tmp_path) -> Path:
    rows = [{"id": "a", "prompt": "Hello?", "rejected": "No."}]
    rows.append({"id": "long", "prompt": "x" * 100_000, "rejected": "No."})
    rows.append({"id": "b", "prompt": "Bye?", "rejected": "No."})
    return write_jsonl(tmp_path / "long.jsonl", rows)


def test_long_prompt_refused_or_skipped(tiny_model, tmp_path, capsys):
    data = _long_data(tmp_path)
    out = tmp_path / "c"
    t = time.perf_counter()
    code, _, err = run_cli(_flags(tiny_model, data, out), capsys)
    err = _one_error(code, err)
    assert f"{data}:2:" in err and "--max-tokens" in err and "--skip-long" in err, err
    assert "context" in err
    assert time.perf_counter() - t < 60
    assert not (out / SAMPLES).exists()

    summary = sample(_args(tiny_model, data, out, skip_long=True), progress=False)
    assert summary["skipped_long"] == 1 and summary["records"] == 2
    assert [r["id"] for r in read_cache(out)[1]] == ["a", "b"]
    # Resumable like any other run: the same command finds the cache complete.
    again = sample(_args(tiny_model, data, out, skip_long=True), progress=False)
    assert again["resumed_batches"] == 1 and again["skipped_long"] == 1


# ---------------------------------------------------------------------------------------------
# Where the cache cannot be written
# ---------------------------------------------------------------------------------------------


def test_output_under_a_regular_file(tiny_model, records_file, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, out, err = run_cli(_flags(tiny_model, records_file, afile / "sub"), capsys)
    err = _one_error(code, err)
    assert str(afile / "sub") in err and "not a directory" in err.lower(), err
    assert afile.read_text() == "x"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 100 KB tmpfs (root and a kernel that lets us mount one), unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_and_read_only(tiny_model, tmp_path, small_tmpfs, capsys):
    # Rows of ~5 KB (a field that rides along): the 100 KB disk fills after about 20 of 40.
    data = _many(tmp_path, n=40, note="filler " * 700)
    out = small_tmpfs / "cache"
    flags = _flags(tiny_model, data, out, "--max-tokens", "4")
    code, _, err = run_cli(flags, capsys)
    err = _one_error(code, err)
    assert str(out) in err and "no space left" in err.lower() and "same command" in err, err
    rows = _whole_lines(out / SAMPLES)  # nothing half-written
    assert 0 < len(rows) < 40
    assert json.loads((out / MANIFEST).read_text())["complete"] is False

    # Read-only now: one line naming the cache, nothing changed.
    before = (out / SAMPLES).read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    code, _, err = run_cli(flags, capsys)
    err = _one_error(code, err)
    assert str(out) in err and "read-only" in err.lower(), err
    assert (out / SAMPLES).read_bytes() == before

    # Space freed: the same command finishes the cache as one uninterrupted run would.
    subprocess.run(["mount", "-o", "remount,rw,size=10m", str(small_tmpfs)], check=True)
    code, _, err = run_cli(flags, capsys)
    assert code == 0, err
    whole = tmp_path / "whole"
    assert run_cli(_flags(tiny_model, data, whole, "--max-tokens", "4"), capsys)[0] == 0
    assert (out / SAMPLES).read_bytes() == (whole / SAMPLES).read_bytes()


# ---------------------------------------------------------------------------------------------
# Settings out of range: one line naming the flag, before any work
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value",
    [
        ("-k", "0"),
        ("--num-samples", "-2"),
        ("--max-tokens", "0"),
        ("--temp", "-1"),
        ("--temp", "nan"),
        ("--top-p", "0"),
        ("--top-p", "1.5"),
        ("--batch-size", "0"),
        ("--limit", "-1"),
        ("--limit", "0"),
    ],
)
def test_range_checks_before_any_work(tmp_path, capsys, flag, value):
    # Neither the model nor the data exist: the setting must be refused first.
    cmd = _flags(tmp_path / "no-model", tmp_path / "no-data.jsonl", tmp_path / "c", flag, value)
    err = _one_error(*run_cli(cmd, capsys)[::2])
    name = "--num-samples" if flag == "-k" else flag
    assert name in err, err
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------------------------
# Progress and summary
# ---------------------------------------------------------------------------------------------


def test_progress_moves_with_tokens():
    import io

    from tqdm import tqdm

    from mlx_d2o.sample.progress import Progress

    bar = tqdm(total=8, file=io.StringIO(), mininterval=0)
    p = Progress(bar, num_samples=3, max_tokens=10)
    p.start_batch(4)
    for _ in range(5):
        p.on_step(12, 0)  # 4 prompts x 3 sequences produced a token each
    assert bar.n == pytest.approx(4 * 5 / 11, abs=0.01)  # halfway through the batch's steps
    assert "tok/s" in str(bar.postfix)
    p.end_batch()
    assert bar.n == pytest.approx(4)
    p.start_batch(4)
    p.on_step(12, 12)  # every sequence stopped at once: the batch is done
    p.end_batch()
    assert bar.n == pytest.approx(8) and p.tokens == 72


def test_summary_file_and_text(tiny_model, records_file, tmp_path, capsys):
    out = tmp_path / "cache"
    code, stdout, err = run_cli(
        _flags(tiny_model, records_file, out, "--max-tokens", "2", "--batch-size", "4"), capsys
    )
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == 8 and summary["samples"] == 24
    assert summary["stopped_by_length"] > 0.5
    assert not stdout.lstrip().startswith("{")  # a text for people, not a JSON blob
    assert "8 prompts" in stdout and "24 samples" in stdout and "tok/s" in stdout
    assert "summary.json" in stdout
    assert "cut at --max-tokens 2" in stdout
    assert "warning:" in err and "raise --max-tokens" in err, err
    # --json prints the JSON for scripts.
    code, stdout, _ = run_cli(
        _flags(tiny_model, records_file, out, "--max-tokens", "2", "--batch-size", "4", "--json"),
        capsys,
    )
    assert code == 0 and json.loads(stdout)["records"] == 8


# ---------------------------------------------------------------------------------------------
# End-of-turn token from the chat template
# ---------------------------------------------------------------------------------------------

LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}"
    "{% for message in messages %}"
    "{% set content = message['content'] %}"
    # Like templates that rewrite earlier turns: a turn followed by another is trimmed, so the
    # prompt is not a prefix of the whole conversation and the fallback is taken.
    "{% if not loop.last %}{% set content = content | trim %}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + content"
    " + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def _llama3_tokenizer():
    from mlx_lm.tokenizer_utils import TokenizerWrapper
    from tokenizers import AddedToken

    from mlx_d2o.testing import tiny_tokenizer

    hf = tiny_tokenizer()
    # <|end_of_text|> before <|eot_id|>, as in Llama 3's vocabulary (128001 < 128009).
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>"]
    specials += ["<|end_header_id|>", "<|eot_id|>"]
    hf.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    hf.chat_template = LLAMA3_TEMPLATE
    ids = hf.convert_tokens_to_ids(["<|end_of_text|>", "<|eot_id|>"])
    hf.eos_token = "<|end_of_text|>"
    return TokenizerWrapper(hf, eos_token_ids=ids), ids


def test_end_of_turn_is_the_templates_own():
    from mlx_d2o.data import prompt_tokens, response_tokens
    from mlx_d2o.data.chat import end_of_turn_id

    tok, (end_of_text, eot_id) = _llama3_tokenizer()
    assert end_of_text < eot_id and set(tok.eos_token_ids) == {end_of_text, eot_id}
    assert end_of_turn_id(tok) == eot_id
    msgs = [{"role": "user", "content": " Hi "}]
    p = prompt_tokens(tok, msgs)
    resp = response_tokens(tok, msgs, "Hello", p)
    assert resp[-1] == eot_id and tok.decode(resp[:-1]) == "Hello"


# ---------------------------------------------------------------------------------------------
# Reference scores as training computes them (issue 11, item 5)
# ---------------------------------------------------------------------------------------------


def _cast_model(src: Path, dst: Path, dtype) -> Path:
    """A copy of the model at SRC with every floating-point array in DTYPE (scales included)."""
    import shutil

    shutil.copytree(src, dst)
    w = mx.load(str(src / "model.safetensors"))
    w = {k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in w.items()}
    mx.save_safetensors(str(dst / "model.safetensors"), w, metadata={"format": "mlx"})
    return dst


def _step0_loss(model: Path, tmp_path: Path, dequantize) -> float:
    from mlx_d2o.train import TrainArgs, train

    # Short answers, so that many re-tokenize to the generated ids (generation's scores are
    # then candidates for reuse).
    data = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": f"r{i}", "prompt": f"Question {i}? " * (1 + i % 3), "rejected": f"No {i}."}
            for i in range(8)
        ],
    )
    cache = tmp_path / "cache"
    sample(
        _args(model, data, cache, num_samples=4, max_tokens=3, batch_size=4, dequantize=dequantize),
        progress=False,
    )
    out = train(
        TrainArgs(
            model=str(model),
            samples=str(cache),
            adapter_path=str(tmp_path / "adapter"),
            iters=1,
            batch_size=8,
            num_layers=2,
            steps_per_report=1,
            dequantize=dequantize,
            # β = α = 1: a reference off by ε nats moves z by about ε, ten times what the
            # default 0.1 shows, so that 1e-4 on the loss is a strict test.
            alpha=1.0,
            beta=1.0,
        )
    )
    return out["last"]["loss"]


@pytest.mark.parametrize("dequantize", [False, None])
@pytest.mark.parametrize("kind", ["bf16", "quantized", "quantized-bf16"])
def test_step0_loss_is_ln2(tiny_model, tiny_quantized_model, tmp_path, kind, dequantize):
    if kind == "bf16":
        model = _cast_model(tiny_model, tmp_path / "model", mx.bfloat16)
    elif kind == "quantized":
        model = tiny_quantized_model
    else:  # as mlx-community's 4-bit models: bf16 scales, norms and embeddings
        model = _cast_model(tiny_quantized_model, tmp_path / "model", mx.bfloat16)
    loss = _step0_loss(model, tmp_path, dequantize)
    assert loss == pytest.approx(math.log(2), abs=1e-4)
