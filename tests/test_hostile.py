"""The hostile probe (issue 21): every command driven as a user's shell would, as a subprocess,
with torn model files, bad recipes, impossible sizes, kills and Ctrl-C at awkward moments.

Each case asserts the exit code, the number of lines printed, no traceback, and that the
output place holds nothing new. Kills are real: the child process is the real CLI with one
library function wrapped to SIGKILL / SIGINT itself at the moment the case is about.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli, write_jsonl

ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    "MLX_D2O_NO_BLAS_REEXEC": "1",
}
# The child runs `main()` after PRELUDE (which may wrap a library function): the real CLI.
CHILD = (
    "import sys, os, signal\nsys.argv = ['mlx-d2o', *sys.argv[1:]]\n{prelude}\n"
    "from mlx_d2o.cli import main\nmain()\n"
)


def _memory_cap():
    # a -k 1000000000 that reaches the allocator fails here instead of swapping the machine
    # (Linux only: Metal maps far more address space than it uses)
    if sys.platform.startswith("linux"):
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))


def cli(*args, cwd, prelude: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    code = CHILD.format(prelude=prelude)
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_memory_cap,
    )


def inproc(capsys, *args) -> subprocess.CompletedProcess:
    """The CLI's `main` in this process, for cases that need no process of their own."""
    code, out, err = run_cli(args, capsys)
    return subprocess.CompletedProcess(args, code, out, err)


def tree(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def one_line(r: subprocess.CompletedProcess, code: int = 2, lines: int = 1) -> str:
    text = (r.stdout + r.stderr).strip()
    assert "Traceback" not in text, text[-3000:]
    assert r.returncode == code, (r.returncode, text[-3000:])
    assert len(text.splitlines()) <= lines, text
    return text


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model and damaged copies, records, a sample cache and a trained adapter."""
    import shutil

    from mlx_d2o.sample import SampleArgs, sample
    from mlx_d2o.testing import make_tiny_model
    from mlx_d2o.train import TrainArgs, train

    root = tmp_path_factory.mktemp("hostile")
    model = make_tiny_model(root / "model")
    for name, file, cut in (
        ("cut_config", "config.json", 100),
        ("cut_tok", "tokenizer.json", 2000),
    ):
        shutil.copytree(model, root / name)
        data = (model / file).read_bytes()[:cut]
        (root / name / file).write_bytes(data)
    shutil.copytree(model, root / "no_tok")
    (root / "no_tok" / "tokenizer.json").unlink()
    rows = [{"prompt": f"Question {i}?", "rejected": f"Bad answer {i}."} for i in range(4)]
    records = write_jsonl(root / "records.jsonl", rows)
    cache = root / "cache"
    sample(
        SampleArgs(
            model=str(model), data=str(records), output=str(cache), num_samples=2,
            max_tokens=4, batch_size=2,
        ),
        progress=False,
    )  # fmt: skip
    adapters = root / "adapters"
    train(
        TrainArgs(
            model=str(model), samples=str(cache), adapter_path=str(adapters), iters=2,
            batch_size=2, num_layers=1, steps_per_eval=0, save_every=0,
        ),
        log=lambda _: None,
    )  # fmt: skip
    return {"root": root, "model": model, "records": records, "cache": cache, "adapters": adapters}


def _train(w, out, *extra, iters=("--iters", "2")):
    return ["train", "--model", w["model"], "--samples", w["cache"], "--adapter-path", out,
            *iters, "--batch-size", "2", "--num-layers", "1", *extra]  # fmt: skip


def _sample(w, model, out, *extra):
    return ["sample", "--model", model, "--data", w["records"], "-o", out, "-k", "2",
            "--max-tokens", "4", "--batch-size", "2", *extra]  # fmt: skip


# --- rows 1-3: torn or missing model files ----------------------------------------------------


@pytest.mark.parametrize("damage", ["cut_config", "cut_tok"])
def test_sample_with_a_torn_model_file_is_one_line(world, damage, tmp_path):
    r = cli(*_sample(world, world["root"] / damage, tmp_path / "c"), cwd=tmp_path)
    assert "cannot load the model" in one_line(r)
    assert tree(tmp_path) == set()


@pytest.mark.parametrize("command", ["sample", "train", "eval", "fuse"])
def test_a_model_without_tokenizer_is_one_line(world, command, tmp_path):
    m, out = world["root"] / "no_tok", tmp_path / "out"
    argv = {
        "sample": _sample(world, m, out),
        "train": ["train", "--model", m, "--samples", world["cache"], "--adapter-path", out],
        "eval": ["eval", "--model", m, "--negatives", world["records"], "--output", out],
        "fuse": ["fuse", "--model", m, "--adapter-path", world["adapters"], "--save-path", out],
    }[command]
    assert "no tokenizer" in one_line(cli(*argv, cwd=tmp_path))
    assert tree(tmp_path) == set()


# --- row 4 and rows 9-11: impossible sizes and values out of range ----------------------------


def test_sample_with_a_billion_samples_is_refused_up_front(world, tmp_path):
    r = cli(*_sample(world, world["model"], tmp_path / "c", "-k", "1000000000"), cwd=tmp_path)
    assert "sequences" in one_line(r)
    assert tree(tmp_path) == set()


@pytest.mark.parametrize(
    "extra, says",
    [
        (["-k", "0"], "-k 0: must be at least 1"),
        (["--memory-limit", "nan"], "--memory-limit nan"),
        (["--ram", "-1"], "--ram -1.0"),
        (["-k", "1000000000", "--batch-size", "1000000000"], "sequences in one step"),
    ],
)
def test_plan_refuses_values_out_of_range_at_once(world, extra, says, tmp_path):
    base = ["plan", "--model", world["model"], "--prompt-tokens", "10", "--response-tokens", "10"]
    r = cli(*base, *extra, cwd=tmp_path, timeout=30)  # before: -k 1e9 x 1e9 ran for ever
    assert says in one_line(r)


def test_alpha_of_1e30_is_out_of_range(world, tmp_path, capsys):
    r = inproc(capsys, *_train(world, tmp_path / "a", "--alpha", "1e30"))
    assert "--alpha 1e+30" in one_line(r)
    assert tree(tmp_path) == set()


# --- row 5 and the recipe points ----------------------------------------------------------------


@pytest.mark.parametrize(
    "recipe, says",
    [
        (b"\xff" + os.urandom(2999), "not a YAML recipe"),
        (b"train:\n  iters: -5\n", "field 'iters' -5"),
        (b"learning_rate: .nan\n", "field 'learning_rate' nan"),
        (b"loss: foo\n", "field 'loss' foo: unknown"),
        (None, "a directory, not a recipe file"),
    ],
)
def test_bad_recipes_are_one_line_naming_the_file_and_key(world, recipe, says, tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.mkdir() if recipe is None else path.write_bytes(recipe)
    before = tree(tmp_path)
    r = inproc(capsys, *_train(world, tmp_path / "a", "-c", path, iters=()))
    text = one_line(r)
    assert says in text and str(path) in text, text
    assert tree(tmp_path) == before


# --- row 6 and the Ctrl-C points ------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_sigint_at_any_early_moment_is_exit_130_in_one_line(world, delay, tmp_path):
    """From the package's first line (then typer, mlx, the command's own imports) to the first
    step; before it, the interpreter itself is starting."""
    prelude = "import mlx_d2o\nprint('ready', flush=True)"
    argv = [
        sys.executable,
        "-c",
        CHILD.format(prelude=prelude),
        *map(str, _train(world, tmp_path / "a")),
    ]
    p = subprocess.Popen(
        argv, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert p.stdout.readline() == "ready\n"
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    if p.returncode == 0:  # the run finished before the signal came: nothing to check
        return
    one_line(subprocess.CompletedProcess(argv, p.returncode, out, err), code=130)


def test_sigint_during_the_final_measurement_then_rerun_writes_the_summary(world, tmp_path):
    out = tmp_path / "a"
    prelude = (
        "import mlx_d2o.train.run as m\n"
        "f = m.mean_negative_logp\n"
        "def g(*a, **k):\n    os.kill(os.getpid(), signal.SIGINT)\n    return f(*a, **k)\n"
        "m.mean_negative_logp = g\n"
    )
    r = cli(*_train(world, out), cwd=tmp_path, prelude=prelude)
    text = one_line(r, code=130, lines=100)
    assert text.split("measuring log π(negative)")[1].splitlines()[1:] == ["interrupted"], text
    assert not (out / "train_summary.json").exists()
    r = cli(*_train(world, out, "--resume"), cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 2


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it(world, tmp_path):
    out = tmp_path / "a"
    prelude = (
        "import mlx_d2o.train.loop as m\n"
        "m.make_step = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert cli(*_train(world, out), cwd=tmp_path, prelude=prelude).returncode == -9
    r = cli(*_train(world, out, "--resume"), cwd=tmp_path)
    assert r.returncode == 0 and "starting at step 0" in r.stderr, r.stderr[-2000:]
    assert (out / "adapters.safetensors").is_file()


# --- rows 7-8: kill -9 of fuse and eval while their temp folders fill -------------------------


@pytest.mark.parametrize("when", ["filled", "early"])
def test_fuse_killed_while_writing_leaves_nothing_after_the_rerun(world, when, tmp_path):
    out = tmp_path / "out"
    kill = "os.kill(os.getpid(), signal.SIGKILL)"
    prelude = (
        "import mlx_lm.utils as u\nf = u.save\n"
        f"def g(*a, **k):\n    {'f(*a, **k); ' if when == 'filled' else ''}{kill}\n"
        "u.save = g\n"
    )
    argv = ["fuse", "--model", world["model"], "--adapter-path", world["adapters"],
            "--save-path", out, "--no-fidelity"]  # fmt: skip
    assert cli(*argv, cwd=tmp_path, prelude=prelude).returncode == -9
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")], "no temp left"
    r = cli(*argv, *(["--overwrite"] if when == "early" else []), cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_eval_killed_while_writing_leaves_nothing_after_the_rerun(world, tmp_path):
    rep = tmp_path / "rep"
    prelude = (
        "import mlx_d2o.evaluate.report as m\n"
        "m._move_into = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    argv = ["eval", "--model", world["model"], "--negatives", world["records"],
            "--output", rep, "--max-tokens", "2"]  # fmt: skip
    assert cli(*argv, cwd=tmp_path, prelude=prelude).returncode == -9
    assert any(p.name.startswith(".report.tmp-") for p in rep.iterdir())
    r = cli(*argv, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not [p.name for p in rep.iterdir() if p.name.startswith(".")]


# --- smaller points --------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["bad model", "long prompt", "bad adapter"])
def test_a_failed_sample_leaves_no_output_folder(world, case, tmp_path, capsys):
    out = tmp_path / "c"
    model = world["root"] / "cut_config" if case == "bad model" else world["model"]
    extra = {"long prompt": ["--max-tokens", "1020"], "bad adapter": ["--adapter-path", tmp_path]}
    r = inproc(capsys, *_sample(world, model, out), *extra.get(case, []))
    one_line(r)
    assert not out.exists()


def test_usage_errors_and_eval_errors_are_one_line(world, tmp_path, capsys):
    one_line(inproc(capsys, "sample", "-k", "abc"))
    r = inproc(capsys, "eval", "--model", world["root"] / "cut_config", "--negatives",
               world["records"], "--output", tmp_path / "r")  # fmt: skip
    assert "config.json" in one_line(r)
    torn = tmp_path / "torn"
    torn.mkdir()
    for f in world["adapters"].iterdir():
        if f.is_file():
            (torn / f.name).write_bytes(
                f.read_bytes()[: 200 if f.suffix == ".safetensors" else None]
            )
    r = inproc(capsys, "eval", "--model", world["model"], "--adapter-path", torn, "--negatives",
               world["records"], "--output", tmp_path / "r")  # fmt: skip
    assert "adapters.safetensors" in one_line(r)
    assert not (tmp_path / "r").exists()


def test_fuse_checks_its_save_path_before_any_work(world, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    argv = ["fuse", "--model", world["model"], "--adapter-path", world["adapters"],
            "--save-path", tmp_path / "afile" / "out"]  # fmt: skip
    text = one_line(inproc(capsys, *argv))
    assert "afile is a file" in text and "File exists" not in text
    assert tree(tmp_path) == {"afile"}


def test_fuse_help_counts_its_builtin_prompts():
    import typing

    from mlx_d2o.cli.fuse import FidelityPrompts
    from mlx_d2o.export.fidelity import BUILTIN

    assert f"{len(BUILTIN)} built-in benign prompts" in typing.get_args(FidelityPrompts)[1].help


def _commands(app, prefix=""):
    for c in app.registered_commands:
        yield prefix + (c.name or c.callback.__name__), c.callback
    for g in app.registered_groups:
        yield from _commands(g.typer_instance, f"{g.name} ")


def _number(hint) -> bool:
    import typing

    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Annotated:
        return _number(args[0])
    if args:  # Optional[int]
        return any(_number(a) for a in args if a is not type(None))
    return hint in (int, float)


def test_every_numeric_flag_of_every_command_has_a_range():
    """One table (`mlx_d2o.ranges.RANGES`) holds a rule for every int / float flag."""
    import typing

    from mlx_d2o import ranges
    from mlx_d2o.cli import app

    missing, seen = [], 0
    for name, fn in _commands(app):
        command = name.split()[0]
        for flag, hint in typing.get_type_hints(fn, include_extras=True).items():
            if flag != "return" and _number(hint):
                seen += 1
                if flag not in ranges.RANGES.get(command, {}):
                    missing.append(f"{name} --{flag}")
    assert seen > 40 and not missing, missing
