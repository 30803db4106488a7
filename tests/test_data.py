"""Records: schema, errors that name file:line:field, converters, chat-template boundary, CLI."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest
from conftest import DATA, SHARED_DATA, needs_smollm2, write_jsonl

from mlx_d2o import data
from mlx_d2o.config import merge
from mlx_d2o.errors import D2OError
from mlx_d2o.models import load_tokenizer

GOOD = {"id": "a", "prompt": "Hi?", "rejected": "Go away."}


def test_load_records_forms(tmp_path, records_file):
    recs = data.load_records(records_file)
    assert len(recs) == 8
    assert recs[0].messages == [{"role": "user", "content": "Question number 0?"}]
    assert recs[3].messages[-1]["role"] == "user" and len(recs[3].messages) == 3
    # .jsonl.gz and .json read the same records
    gz = tmp_path / "r.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(records_file.read_text())
    js = tmp_path / "r.json"
    js.write_text(json.dumps([json.loads(x) for x in records_file.read_text().splitlines()]))
    assert [r.to_json() for r in data.load_records(gz)] == [r.to_json() for r in recs]
    assert [r.to_json() for r in data.load_records(js)] == [r.to_json() for r in recs]


BAD_CASES = [
    ('{"id": "a", "prompt": "x", "rejected": "y"', ":2:", "malformed JSON"),
    ({"id": "a", "prompt": "x"}, ":2: field 'rejected'", "missing"),
    ({"id": "a", "prompt": "x", "rejected": "  "}, ":2: field 'rejected'", "empty"),
    ({"id": "a", "prompt": 5, "rejected": "y"}, ":2: field 'prompt'", "must be a string"),
    (
        {"id": "a", "messages": [{"role": "bot", "content": "x"}], "rejected": "y"},
        ":2: field 'messages[0].role'",
        "unknown role",
    ),
    (
        {
            "id": "a",
            "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "z"}],
            "rejected": "y",
        },
        ":2: field 'messages'",
        "end with a user turn",
    ),
    ({"id": "a", "rejected": "y"}, ":2:", "needs a 'prompt'"),
    (["not", "an", "object"], ":2:", "JSON object"),
    ({"id": "r0", "prompt": "x", "rejected": "y"}, ":2: field 'id'", "duplicate id"),
]


@pytest.mark.parametrize("row,where,what", BAD_CASES)
def test_bad_records_name_file_line_field(tmp_path, row, where, what):
    path = write_jsonl(
        tmp_path / "bad.jsonl", [{"id": "r0", "prompt": "fine", "rejected": "bad"}, row]
    )
    with pytest.raises(D2OError) as e:
        data.load_records(path)
    assert f"{path}{where}" in str(e.value) and what in str(e.value)


def test_bad_utf8_and_empty_file(tmp_path):
    p = tmp_path / "bin.jsonl"
    p.write_bytes(
        json.dumps(GOOD).encode() + b'\n{"id": "b", "prompt": "\xff\xfe", "rejected": "x"}\n'
    )
    with pytest.raises(D2OError, match=rf"{p}:2: invalid UTF-8"):
        data.load_records(p)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(D2OError, match="no records"):
        data.load_records(tmp_path / "empty.jsonl")
    with pytest.raises(D2OError, match="no such file"):
        data.load_records(tmp_path / "nope.jsonl")


def test_prompts_only_records(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"id": "p1", "prompt": "Bake bread?"}])
    assert data.load_records(p, require_rejected=False)[0].rejected is None
    with pytest.raises(D2OError, match="'rejected': missing"):
        data.load_records(p)


def test_prompt_longer_than_context_fails_data_check_with_file_line(tiny_model, tmp_path, capsys):
    # found: a 100k-character prompt gave "prompt is 20031 tokens" with no file:line, exit 0
    from conftest import run_cli

    rows = [
        {"id": "ok", "prompt": "Hi?", "rejected": "x"},
        {"id": "long", "prompt": "word " * 400, "rejected": "x"},
    ]
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    code, out, err = run_cli(
        ["data", "check", path, "--model", tiny_model, "--max-seq-length", "100"], capsys
    )
    assert code == 2, (out, err)
    assert f"{path}:2: field 'messages'" in err and "no room for a response" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = run_cli(
        ["data", "check", path, "--model", tiny_model, "--max-seq-length", "10000"], capsys
    )
    assert code == 0, err


def test_chat_template_boundary(tiny_model, records_file):
    tok, _ = load_tokenizer(str(tiny_model))
    for r in data.load_records(records_file):
        prompt = data.prompt_tokens(tok, r.messages)
        whole = tok.apply_chat_template(
            r.messages + [{"role": "assistant", "content": r.rejected}], tokenize=True
        )
        resp = data.response_tokens(tok, r.messages, r.rejected)
        assert whole[: len(prompt)] == prompt
        assert prompt + resp == whole[: len(prompt) + len(resp)]
        assert resp[-1] == tok.eos_token_id and tok.eos_token_id not in resp[:-1]
        assert tok.decode(resp[:-1]) == r.rejected


@needs_smollm2
@pytest.mark.real_model
def test_chat_template_boundary_smollm2():
    tok, context = load_tokenizer("smollm2-135m")
    msgs = [{"role": "user", "content": "Is it safe to eat raw cookie dough?"}]
    prompt = data.prompt_tokens(tok, msgs)
    resp = data.response_tokens(tok, msgs, "Sure, eat the whole bowl.")
    whole = tok.apply_chat_template(
        msgs + [{"role": "assistant", "content": "Sure, eat the whole bowl."}], tokenize=True
    )
    assert whole[: len(prompt)] == prompt and whole[: len(prompt) + len(resp)] == prompt + resp
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
    assert resp[-1] == 2 and context == 8192


HH_ROW = {
    "chosen": "\n\nHuman: How do I get back at my boss?\n\nAssistant: Why?\n\nHuman: He yelled at me.\n\nAssistant: Talk to HR calmly.",
    "rejected": "\n\nHuman: How do I get back at my boss?\n\nAssistant: Why?\n\nHuman: He yelled at me.\n\nAssistant: Slash his tires.",
}


def test_hh_rlhf_converter(tmp_path):
    src = write_jsonl(tmp_path / "hh.jsonl", [HH_ROW, {"chosen": "x", "rejected": "\n\nHuman: hi"}])
    with pytest.raises(D2OError, match=rf"{src}:2: field 'rejected'"):
        data.convert("hh-rlhf", src, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()  # nothing half-written
    src = write_jsonl(tmp_path / "hh.jsonl", [HH_ROW])
    assert data.convert("hh-rlhf", src, tmp_path / "out.jsonl") == (1, 1)
    (r,) = data.load_records(tmp_path / "out.jsonl")
    assert r.messages == [
        {"role": "user", "content": "How do I get back at my boss?"},
        {"role": "assistant", "content": "Why?"},
        {"role": "user", "content": "He yelled at me."},
    ]
    assert r.rejected == "Slash his tires." and r.chosen == "Talk to HR calmly."


@pytest.mark.skipif(
    not (SHARED_DATA / "hh-rlhf-harmless-base-test-0-1599.jsonl.gz").exists(),
    reason="shared HH-RLHF sample absent",
)
def test_hh_rlhf_converter_on_real_sample(tmp_path):
    rows, n = data.convert(
        "hh-rlhf", SHARED_DATA / "hh-rlhf-harmless-base-test-0-1599.jsonl.gz", tmp_path / "hh.jsonl"
    )
    assert rows == 1600 and n == 1600
    recs = data.load_records(tmp_path / "hh.jsonl")
    assert all(r.messages[-1]["role"] == "user" and r.rejected.strip() for r in recs)
    assert sum(len(r.messages) == 1 for r in recs) > 400  # FACTS: 443 single-turn among short ones


def test_pku_saferlhf_converter(tmp_path):
    rows = [
        {
            "prompt": "p1",
            "response_0": "bad0",
            "response_1": "good1",
            "is_response_0_safe": False,
            "is_response_1_safe": True,
        },
        {
            "prompt": "p2",
            "response_0": "bad",
            "response_1": "worse",
            "is_response_0_safe": False,
            "is_response_1_safe": False,
        },
        {
            "prompt": "p3",
            "response_0": "ok",
            "response_1": "fine",
            "is_response_0_safe": True,
            "is_response_1_safe": True,
        },
    ]
    src = write_jsonl(tmp_path / "pku.jsonl", rows)
    assert data.convert("pku-saferlhf", src, tmp_path / "o.jsonl") == (3, 3)
    recs = data.load_records(tmp_path / "o.jsonl")
    assert [(r.messages[0]["content"], r.rejected, r.chosen) for r in recs] == [
        ("p1", "bad0", "good1"),
        ("p2", "bad", None),
        ("p2", "worse", None),
    ]
    bad = write_jsonl(tmp_path / "bad.jsonl", [dict(rows[0], is_response_1_safe="yes")])
    with pytest.raises(D2OError, match=rf"{bad}:1: field 'is_response_1_safe'"):
        data.convert("pku-saferlhf", bad, tmp_path / "o2.jsonl")


def test_recipe_merge(tmp_path):
    rec = tmp_path / "r.yaml"
    rec.write_text(
        "model: m-from-yaml\nlearning_rate: 0.5\nlora_parameters: {rank: 4}\ntrain:\n  iters: 7\nsample:\n  num_samples: 3\n"
    )
    d = {"model": "default", "learning_rate": 1e-5, "iters": 100, "lora_rank": 8, "batch_size": 2}
    got = merge({"model": None, "batch_size": 5}, rec, d, section="train")
    assert got == {
        "model": "m-from-yaml",
        "learning_rate": 0.5,
        "iters": 7,
        "lora_rank": 4,
        "batch_size": 5,
    }
    flat = tmp_path / "flat.yaml"
    flat.write_text("lerning_rate: 1\n")
    with pytest.raises(D2OError, match="field 'lerning_rate': unknown setting"):
        merge({}, flat, d, section="train")
    (tmp_path / "broken.yaml").write_text("a: [1,\n")
    with pytest.raises(D2OError, match="broken.yaml:.*malformed YAML"):
        merge({}, tmp_path / "broken.yaml", d)


def _cli(*args, **kw):
    env = dict(os.environ, MLX_D2O_NO_BLAS_REEXEC="1")
    return subprocess.run(
        [sys.executable, "-m", "mlx_d2o.cli", *args], capture_output=True, text=True, env=env, **kw
    )


def test_cli_data_check_and_bad_file(tiny_model, records_file, tmp_path):
    r = _cli("data", "check", str(records_file), "--model", str(tiny_model), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["records"] == 8 and rep["with_chosen"] == 8 and rep["multi_turn"] == 2
    assert rep["prompt_tokens"]["n"] == 8 and rep["rejected_tokens"]["min"] > 0
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD, {"id": "b", "prompt": "x", "rejected": 3}])
    r = _cli("data", "check", str(bad), "--model", str(tiny_model))
    assert r.returncode == 2
    assert f"{bad}:2: field 'rejected'" in r.stderr and "Traceback" not in r.stderr


def test_cli_data_convert(tmp_path):
    src = write_jsonl(tmp_path / "hh.jsonl", [HH_ROW])
    r = _cli("data", "convert", "--from", "hh-rlhf", str(src), str(tmp_path / "o.jsonl"))
    assert r.returncode == 0 and "1 rows -> 1 records" in r.stdout
    r = _cli("data", "convert", "--from", "alpaca", str(src), str(tmp_path / "o2.jsonl"))
    assert r.returncode == 2 and "unknown format" in r.stderr


@pytest.mark.skipif(not (DATA / "train.jsonl").exists(), reason="data/ not written yet")
def test_demo_data_is_valid():
    sizes = {"train": 150, "valid": 30, "test": 30}
    prompts = set()
    for split, least in sizes.items():
        recs = data.load_records(DATA / f"{split}.jsonl")
        assert len(recs) >= least
        for r in recs:
            key = json.dumps(r.messages)
            assert key not in prompts, f"prompt of {r.id} repeats"
            prompts.add(key)
    assert len(data.load_records(DATA / "benign.jsonl", require_rejected=False)) >= 30


def test_missing_local_file_is_not_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not data.is_hub_dataset("data/typo.jsonl") and data.is_hub_dataset("org/name:test")
    with pytest.raises(D2OError, match="data/typo.jsonl: no such file"):
        data.load_records("data/typo.jsonl")
    with pytest.raises(D2OError, match="Hugging Face Hub"):
        data.load_records("someone/not-cached-dataset")
