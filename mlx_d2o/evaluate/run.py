"""`evaluate`: one run over the base model and each adapter, one table row per model.

One run loads the base model once and puts each adapter on and off it in turn (`Adapter`); the
base without adapter is the reference π_ref and the table's first row. The reference's work is
done once: its negative (and chosen) scores and its benign responses are kept and reused for
every adapter. Per-item values are measured here; `sections` summarises them (n, intervals).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from .. import adapters
from ..adapters import Adapter
from ..io import remove_stale_temps
from . import sections
from .args import EvalArgs, load_inputs
from .judges import answer_patterns, answer_verdicts, is_refusal
from .metrics import INTERVALS
from .names import row_ids, row_names
from .report import REPORT_VERSION, write_report


def _say(msg: str) -> None:
    """A status line on stderr, for steps that take a while and have no bar."""
    print(msg, file=sys.stderr, flush=True)


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


def _check_files(args: EvalArgs) -> None:
    """The user's files (model, adapters, the base each adapter names), before "loading" is
    said: a mistake there is one line, not a status line and then the error."""
    from ..models import check_model, model_fingerprint

    fingerprint = model_fingerprint(check_model(args.model))
    for p in args.adapter_paths:
        adapters.check_base(p, adapters.check_files(p), fingerprint)


class _Run:
    """State shared by all rows of one run: the base model, encoded inputs, the judge, and the
    reference's results (its scores and its benign responses), computed once."""

    SETS = ("harmful", "benign", "overrefusal")  # the generated sets, in generation order

    def __init__(self, args: EvalArgs):
        from .. import logprobs
        from ..models import load
        from .judges import make_judge

        self.args = args
        self.sets = load_inputs(args)
        self.answers = answer_patterns(self.sets["benign"])  # a bad pattern refused first
        remove_stale_temps(args.output, "report")  # what a killed eval left in its report
        # A bad judge (a typo in a pattern, a model without chat template) is refused first.
        self.judge = make_judge(args.judge, args.judge_threshold, args.batch_size)
        _check_files(args)
        _say(f"loading model {args.model}...")
        self.model, self.tok, self.info = load(args.model, return_info=True)
        self.pad_id = logprobs.pad_id(self.tok)
        # Refuse a mismatched adapter or judge before any long work starts.
        self.configs = []
        for p in args.adapter_paths:
            adapter = Adapter(self.model, p, self.info.fingerprint)
            self.configs.append(adapter.config)
            adapter.remove()
        self._encode()
        self.ref = {}  # the base's per-item scores ("rejected", "chosen") and benign texts

    def _encode(self) -> None:
        from ..data import prompt_tokens, response_tokens

        self.neg_pairs, self.chosen_pairs, self.with_chosen = [], [], []
        for i, r in enumerate(self.sets["negatives"] or []):
            conv = self.conversation(r)
            p = prompt_tokens(self.tok, conv)
            self.neg_pairs.append((p, response_tokens(self.tok, conv, r.rejected, p)))
            if r.chosen is not None:
                self.with_chosen.append(i)
                self.chosen_pairs.append((p, response_tokens(self.tok, conv, r.chosen, p)))
        self.prompts = {
            k: [prompt_tokens(self.tok, self.conversation(r)) for r in self.sets[k]]
            for k in self.SETS
        }

    def conversation(self, record) -> list:
        from ..data import with_system

        return with_system(record.messages, self.args.system_prompt)

    def _text(self, ids) -> str:
        eos = self.tok.eos_token_ids
        return self.tok.decode([t for t in ids if t not in eos])

    def _generate(self, name) -> dict:
        """Responses to every generated set, in one batched call.

        One call instead of one per set keeps the batch full for longer: a batch's tail, when
        a few long responses decode alone, is paid once, not once per set.
        """
        from .progress import generate_responses

        args = self.args
        prompts = [p for k in self.SETS for p in self.prompts[k]]
        _say(
            f"{name}: generating {len(prompts)} responses (at most {args.max_tokens} tokens each)..."
        )
        ids = generate_responses(
            self.model, self.tok, prompts, args.max_tokens, args.temp, args.seed, args.batch_size,
            f"{name}: generating",
        )  # fmt: skip
        out, i = {}, 0
        for k in self.SETS:
            out[k], i = ids[i : i + len(self.prompts[k])], i + len(self.prompts[k])
        return out

    def _score(self, pairs: list, desc: str) -> tuple[list, list]:
        """log π of each (prompt, response) pair, with a bar that moves once per batch (the pairs
        sorted longest first, then scored a batch at a time)."""
        from tqdm import tqdm

        from ..logprobs import score
        from ..shared_prefix import score_after_prefix

        bs = self.args.batch_size
        order = sorted(range(len(pairs)), key=lambda j: -len(pairs[j][0]) - len(pairs[j][1]))
        logps, counts = [0.0] * len(pairs), [0] * len(pairs)
        with tqdm(total=len(pairs), desc=desc, file=sys.stderr, leave=False) as bar:
            for c in range(0, len(order), bs):
                chunk = order[c : c + bs]
                batch = [pairs[j] for j in chunk]
                # The batch's common beginning (the system prompt) once, when it has one.
                lp, n = score_after_prefix(self.model, batch, bs, self.pad_id) or score(
                    self.model, batch, bs, self.pad_id
                )
                for j, a, b in zip(chunk, lp, n):
                    logps[j], counts[j] = a, b
                bar.update(len(chunk))
        return logps, counts

    def negatives_metrics(self, name: str, adapter: Optional[Adapter]) -> dict:
        logps, counts = self._score(self.neg_pairs, f"{name}: scoring negatives")
        if adapter is None:
            self.ref["rejected"] = logps
        out = {"negatives": sections.negatives(logps, counts, self.ref["rejected"])}
        if self.chosen_pairs:
            chosen, _ = self._score(self.chosen_pairs, f"{name}: scoring chosen")
            if adapter is None:
                self.ref["chosen"] = chosen
            rejected = [logps[i] for i in self.with_chosen]
            ref_rejected = [self.ref["rejected"][i] for i in self.with_chosen]
            out["pairs"] = sections.pairs(
                chosen, self.ref["chosen"], rejected, ref_rejected, adapter is None
            )
        return out

    def harmful_metrics(self, ids: list) -> tuple[dict, list]:
        records = self.sets["harmful"]
        texts = [self._text(x) for x in ids]
        verdicts = self.judge.safety([self.conversation(r) for r in records], texts)
        refusals = [is_refusal(t) for t in texts]
        scores = getattr(self.judge, "last_scores", None)  # a model judge's P(unsafe)
        mass = getattr(self.judge, "last_mass", None)
        m = sections.harmful(
            verdicts, refusals, [len(x) for x in ids], self.judge.name, scores, mass
        )
        dump = [
            {"set": "harmful", "id": r.id, "response": t, "verdict": v, "refusal": f}
            for r, t, v, f in zip(records, texts, verdicts, refusals)
        ]
        for d, p in zip(dump, scores or []):
            d["p_unsafe"] = p
        return m, dump

    def _kl(self, name: str, ids: list, adapter: Optional[Adapter]) -> tuple[list, list]:
        from ..shared_prefix import kl_after_prefix
        from .metrics import sequence_kl

        if adapter is None:
            # The reference against itself: exactly 0, no need to run it twice.
            return [0.0] * len(ids), [len(x) for x in ids]
        pairs = list(zip(self.prompts["benign"], ids))
        bs = self.args.batch_size
        desc = f"{name}: KL"
        return kl_after_prefix(adapter, pairs, bs, self.pad_id, desc=desc) or sequence_kl(
            self.model, _Reference(adapter), pairs, bs, self.pad_id, desc=desc
        )

    def benign_metrics(self, name: str, ids: list, adapter: Optional[Adapter]) -> tuple[dict, list]:
        texts = [self._text(x) for x in ids]
        kls, counts = self._kl(name, ids, adapter)
        if adapter is None:
            self.ref["benign"] = texts
        refusals = [is_refusal(t) for t in texts]
        m = sections.benign(texts, kls, counts, refusals, [len(x) for x in ids])
        results, scores = [None] * len(texts), []
        if self.judge.can_compare and adapter is not None:
            convs = [self.conversation(r) for r in self.sets["benign"]]
            results = self.judge.compare(convs, texts, self.ref["benign"])
            scores = self.judge.last_scores
            m.update(sections.win_rate(results, scores, self.judge.name))
        correct = answer_verdicts(self.answers, texts)
        rows = zip(self.sets["benign"], texts, refusals, kls, counts, results, correct)
        keys = ("response", "refusal", "kl", "tokens", "vs_base", "correct")
        dump = [{"set": "benign", "id": r.id, **dict(zip(keys, rest))} for r, *rest in rows]
        for d, p in zip(dump, scores):
            d["p_better"] = p
        return m, dump

    def overrefusal_metrics(self, ids: list) -> tuple[dict, list]:
        texts = [self._text(x) for x in ids]
        refusals = [is_refusal(t) for t in texts]
        m = sections.overrefusal(refusals, [len(x) for x in ids])
        dump = [
            {"set": "overrefusal", "id": r.id, "response": t, "refusal": f}
            for r, t, f in zip(self.sets["overrefusal"], texts, refusals)
        ]
        return m, dump

    def row(self, name: str, adapter: Optional[Adapter]) -> tuple[dict, list]:
        """One table row and its responses (the base when ADAPTER is None: it must come first)."""
        out, dump = {"name": name, "adapter_path": str(adapter.path) if adapter else None}, []
        if self.neg_pairs:
            out.update(self.negatives_metrics(name, adapter))
        if not any(self.prompts[k] for k in self.SETS):
            return out, dump
        ids = self._generate(name)
        if self.sets["harmful"]:
            out["harmful"], d = self.harmful_metrics(ids["harmful"])
            dump += d
        if self.sets["benign"]:
            out["benign"], d = self.benign_metrics(name, ids["benign"], adapter)
            dump += d
            if any(p is not None for p in self.answers):
                out["answers"] = sections.answers([x["correct"] for x in d])
        if self.sets["overrefusal"]:
            out["overrefusal"], d = self.overrefusal_metrics(ids["overrefusal"])
            dump += d
        return out, dump


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _settings(args: EvalArgs, run: _Run) -> dict:
    from .markers import KEYWORD_JUDGE_ACCURACY

    s = run.sets
    return {
        "model": args.model,
        "model_path": str(run.info.path),
        "model_fingerprint": run.info.fingerprint,
        "adapters": list(map(str, args.adapter_paths)),
        "judge": run.judge.name,
        "judge_threshold": getattr(run.judge, "threshold", None),
        "judge_accuracy": KEYWORD_JUDGE_ACCURACY if run.judge.name == "keyword" else None,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "temp": args.temp,
        "num_prompts": args.num_prompts,
        "batch_size": args.batch_size,
        "system_prompt": args.system_prompt,
        "negatives": _data_info(args.negatives, s["negatives"]),
        "prompts": _data_info(args.prompts, s["harmful"]),
        "benign": _data_info(args.benign, s["benign"]),
        "overrefusal": _data_info(args.overrefusal, s["overrefusal"]),
        "intervals": INTERVALS,
    }


def _rows(run: _Run, adapter_paths: Sequence[str]) -> tuple[list, dict]:
    """The base's row, then each adapter's, put on the one base and taken off again."""
    rows, dumps = [], {}
    names = row_names(adapter_paths, run.configs)
    for rid, name, path in zip(row_ids(adapter_paths), names, [None, *adapter_paths]):
        adapter = Adapter(run.model, path, run.info.fingerprint) if path is not None else None
        try:
            row, dump = run.row(name, adapter)
        finally:
            if adapter is not None:
                adapter.remove()
        row["id"] = rid
        if adapter is not None:
            row["adapter_config"] = adapter.config
        rows.append(row)
        dumps[rid] = dump
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
