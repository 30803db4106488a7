"""`evaluate`: one run over the base model and each adapter, one table row per model.

One run loads the base model once and puts each adapter on and off it in turn (`Adapter`); the
base without adapter is the reference π_ref and the table's first row. The reference's work is
done once: its negative scores and its benign responses are kept and reused for every adapter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..adapters import Adapter
from ..errors import D2OError
from .judges import UNPARSEABLE, UNSAFE, is_refusal
from .metrics import distinct_n, mean, rate, sequence_kl
from .report import REPORT_VERSION, row_names, write_report


@dataclass
class EvalArgs:
    """Settings of one `mlx-d2o eval` run (flag names as the CLI's, with underscores).

    Args:
        model: base model (embedded name, .gguf, mlx-lm dir or Hub id); also the reference.
        adapter_paths: adapter directories to compare with the base, one table row each.
        negatives: records with `rejected` (held-out human negatives).
        prompts: harmful prompts (records, `rejected` not needed).
        benign: benign prompts (records, `rejected` not needed).
        output: report directory.
        judge: `keyword` or a chat model for `models.load`.
        num_prompts: use the first N records of each file (None: all).
        max_tokens: new tokens per generated response.
        temp: sampling temperature, 0 = greedy.
        seed: seed of the sampler (the same for every model).
        batch_size: sequences generated or scored together (on a CPU, decoding 48 sequences
            together gave 1.7-2.5x the tokens/s of 16 with SmolLM2-135M; lower it for big models).
        system_prompt: system turn put before every prompt.
    """

    model: str = "smollm2-135m"
    adapter_paths: list = field(default_factory=list)
    negatives: Optional[str] = None
    prompts: Optional[str] = None
    benign: Optional[str] = None
    output: str = "report"
    judge: str = "keyword"
    num_prompts: Optional[int] = 64
    max_tokens: int = 128
    temp: float = 0.0
    seed: int = 0
    batch_size: int = 32
    system_prompt: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# Inputs, checked before the model is loaded
# ---------------------------------------------------------------------------------------------


def _load_set(spec: Optional[str], what: str, require_rejected: bool, limit: Optional[int]):
    from ..data import load_records

    if spec is None:
        return None
    p = Path(str(spec))
    # A path to a data file that is not there is a typo, not a Hub dataset id to go and fetch.
    looks_like_file = p.suffix in (".jsonl", ".json", ".gz") or str(spec).startswith(
        (".", "/", "~")
    )
    if not p.exists() and looks_like_file:
        raise D2OError(f"{spec}: no such file ({what})")
    records = load_records(spec, require_rejected=require_rejected)
    return records[:limit] if limit else records


def _load_inputs(args: EvalArgs) -> tuple:
    """(negatives or None, harmful, benign) records; every bad input refused before any work."""
    n = args.num_prompts
    negatives = _load_set(args.negatives, "--negatives", True, n)
    harmful = _load_set(args.prompts, "--prompts", False, n) or []
    benign = _load_set(args.benign, "--benign", False, n) or []
    if negatives is None and not harmful and not benign:
        raise D2OError("nothing to evaluate: give at least one of --negatives, --prompts, --benign")
    for p in args.adapter_paths:
        if not Path(p).is_dir():
            raise D2OError(f"{p}: no such adapter directory")
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise D2OError(f"--output {args.output}: exists and is not a directory")
    return negatives, harmful, benign


def _data_info(spec, records) -> Optional[dict]:
    from ..data import data_fingerprint

    if spec is None:
        return None
    return {"file": str(spec), "n": len(records), "fingerprint": data_fingerprint(records)}


class _Reference:
    """Calls the model with its adapter switched off: π_ref's logits on the same inputs.

    MLX is lazy: the graph built inside the block holds the base weights, so switching the
    adapter back on before evaluating it does not change the result.
    """

    def __init__(self, adapter: Adapter):
        self.adapter = adapter

    def __call__(self, inputs):
        with self.adapter.disabled() as base:
            return base(inputs)


# ---------------------------------------------------------------------------------------------
# The rows
# ---------------------------------------------------------------------------------------------


class _Run:
    """State shared by all rows of one run: the base model, encoded inputs, the judge, and the
    reference's results (its negative scores and its benign responses), computed once."""

    def __init__(self, args: EvalArgs):
        from ..models import load
        from .judges import make_judge

        self.args = args
        self.negatives, self.harmful, self.benign = _load_inputs(args)
        self.model, self.tok, self.info = load(args.model, return_info=True)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        # Refuse a mismatched adapter or judge before any long work starts.
        for p in args.adapter_paths:
            Adapter(self.model, p, self.info.fingerprint).remove()
        self.judge = make_judge(args.judge)
        self._encode()
        self.ref_logps = None  # the base's log π of each negative
        self.ref_benign = None  # the base's responses to the benign prompts

    def _encode(self) -> None:
        from ..data import prompt_tokens, response_tokens

        self.neg_pairs = []
        for r in self.negatives or []:
            conv = self.conversation(r)
            p = prompt_tokens(self.tok, conv)
            self.neg_pairs.append((p, response_tokens(self.tok, conv, r.rejected, p)))
        self.harm_prompts = [prompt_tokens(self.tok, self.conversation(r)) for r in self.harmful]
        self.benign_prompts = [prompt_tokens(self.tok, self.conversation(r)) for r in self.benign]

    def conversation(self, record) -> list:
        from ..data import with_system

        return with_system(record.messages, self.args.system_prompt)

    def _text(self, ids) -> str:
        eos = self.tok.eos_token_ids
        return self.tok.decode([t for t in ids if t not in eos])

    def _generate(self, name) -> tuple[list, list]:
        """Responses to the harmful and the benign prompts, in one batched call.

        One call instead of one per set keeps the batch full for longer: a batch's tail, when
        a few long responses decode alone, is paid once, not twice.
        """
        from ..generation import generate_tokens

        a = self.args
        ids = generate_tokens(
            self.model,
            self.tok,
            self.harm_prompts + self.benign_prompts,
            a.max_tokens,
            temp=a.temp,
            seed=a.seed,
            batch_size=a.batch_size,
            desc=f"{name}: generating",
        )
        return ids[: len(self.harm_prompts)], ids[len(self.harm_prompts) :]

    def negatives_metrics(self, adapter: Optional[Adapter]) -> dict:
        from ..logprobs import score

        logps, counts = score(self.model, self.neg_pairs, self.args.batch_size, self.pad_id)
        if adapter is None:
            self.ref_logps = logps
        logratio = 0.0 if adapter is None else mean([a - r for a, r in zip(logps, self.ref_logps)])
        return {
            "n": len(logps),
            "tokens": sum(counts),
            "logps": mean(logps),
            "logratio": logratio,
            "nll_per_token": -sum(logps) / max(1, sum(counts)),
        }

    def harmful_metrics(self, ids: list) -> tuple[dict, list]:
        texts = [self._text(x) for x in ids]
        verdicts = self.judge.safety([self.conversation(r) for r in self.harmful], texts)
        refusals = [is_refusal(t) for t in texts]
        n = len(texts)
        m = {
            "n": n,
            "judge": self.judge.name,
            "unsafe_rate": rate(verdicts.count(UNSAFE), n),
            "refusal_rate": rate(sum(refusals), n),
            "unsafe": verdicts.count(UNSAFE),
            "refusals": sum(refusals),
            "unparseable": verdicts.count(UNPARSEABLE),
            "mean_tokens": mean([len(x) for x in ids]),
        }
        dump = [
            {"set": "harmful", "id": r.id, "response": t, "verdict": v, "refusal": f}
            for r, t, v, f in zip(self.harmful, texts, verdicts, refusals)
        ]
        for d, ans in zip(dump, getattr(self.judge, "last_answers", [])):
            d["judge_answer"] = ans
        return m, dump

    def _kl(self, name: str, ids: list, adapter: Optional[Adapter]) -> tuple[list, list]:
        if adapter is None:
            # The reference against itself: exactly 0, no need to run it twice.
            return [0.0] * len(ids), [len(x) for x in ids]
        pairs = list(zip(self.benign_prompts, ids))
        reference = _Reference(adapter)
        bs = self.args.batch_size
        return sequence_kl(self.model, reference, pairs, bs, self.pad_id, desc=f"{name}: KL")

    def _win_rate(self, m: dict, texts: list) -> tuple[list, list]:
        """The judge's verdicts on TEXTS against the base's answers; counts added to M."""
        convs = [self.conversation(r) for r in self.benign]
        results = self.judge.compare(convs, texts, self.ref_benign)
        wins, losses = results.count("win"), results.count("loss")
        m.update(
            win_rate=rate(wins, wins + losses),
            wins=wins,
            losses=losses,
            unparseable=results.count(UNPARSEABLE),
            judge=self.judge.name,
        )
        return results, self.judge.last_answers

    def benign_metrics(self, name: str, ids: list, adapter: Optional[Adapter]) -> tuple[dict, list]:
        texts = [self._text(x) for x in ids]
        kls, counts = self._kl(name, ids, adapter)
        if adapter is None:
            self.ref_benign = texts
        refusals = [is_refusal(t) for t in texts]
        n = len(texts)
        m = {
            "n": n,
            "tokens": sum(counts),
            "kl_per_token": sum(kls) / max(1, sum(counts)),
            "distinct_1": distinct_n(texts, 1),
            "distinct_2": distinct_n(texts, 2),
            "refusal_rate": rate(sum(refusals), n),
            "refusals": sum(refusals),
            "mean_tokens": mean([len(x) for x in ids]),
            "win_rate": None,
        }
        results, answers = [None] * n, []
        if self.judge.can_compare and adapter is not None:
            results, answers = self._win_rate(m, texts)
        rows = zip(self.benign, texts, refusals, kls, counts, results)
        keys = ("response", "refusal", "kl", "tokens", "vs_base")
        dump = [{"set": "benign", "id": r.id, **dict(zip(keys, rest))} for r, *rest in rows]
        for d, ans in zip(dump, answers):
            d["judge_answer"] = ans
        return m, dump

    def row(self, name: str, adapter: Optional[Adapter]) -> tuple[dict, list]:
        """One table row and its responses (the base when ADAPTER is None: it must come first)."""
        out, dump = {"name": name, "adapter_path": str(adapter.path) if adapter else None}, []
        if self.neg_pairs:
            out["negatives"] = self.negatives_metrics(adapter)
        harm_ids, benign_ids = self._generate(name)
        if self.harmful:
            out["harmful"], d = self.harmful_metrics(harm_ids)
            dump += d
        if self.benign:
            out["benign"], d = self.benign_metrics(name, benign_ids, adapter)
            dump += d
        return out, dump


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _settings(args: EvalArgs, run: _Run) -> dict:
    return {
        "model": args.model,
        "model_path": str(run.info.path),
        "model_fingerprint": run.info.fingerprint,
        "adapters": list(map(str, args.adapter_paths)),
        "judge": run.judge.name,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "temp": args.temp,
        "num_prompts": args.num_prompts,
        "batch_size": args.batch_size,
        "system_prompt": args.system_prompt,
        "negatives": _data_info(args.negatives, run.negatives),
        "prompts": _data_info(args.prompts, run.harmful),
        "benign": _data_info(args.benign, run.benign),
    }


def _rows(run: _Run, adapter_paths: Sequence[str]) -> tuple[list, dict]:
    """The base's row, then each adapter's, put on the one base and taken off again."""
    rows, dumps = [], {}
    for name, path in zip(row_names(adapter_paths), [None, *adapter_paths]):
        adapter = Adapter(run.model, path, run.info.fingerprint) if path is not None else None
        try:
            row, dump = run.row(name, adapter)
        finally:
            if adapter is not None:
                adapter.remove()
        if adapter is not None:
            row["adapter_config"] = adapter.config
        rows.append(row)
        dumps[name] = dump
    return rows, dumps


def evaluate(args: EvalArgs) -> dict:
    """Run every measurement for the base and each adapter; write the report; return it.

    Returns the report (as written to `report.json`), with `paths` to the files written.
    """
    t0 = time.time()
    run = _Run(args)
    rows, dumps = _rows(run, list(args.adapter_paths))
    report = {
        "version": REPORT_VERSION,
        "settings": _settings(args, run),
        "rows": rows,
        "seconds": round(time.time() - t0, 1),
    }
    write_report(report, dumps, args.adapter_paths, Path(args.output))
    return report
