"""`mlx-d2o eval`: is an adapter less harmful, and is it still as helpful as the base model?

One run loads the base model once and puts each adapter on and off it in turn; the base model
without adapter is the reference π_ref and the table's first row. For every model it measures:

- **negatives** (held-out human negatives, "forgetting" in the paper's sense): the mean summed
  log π(y_l|x), the mean log-ratio log π(y_l|x) − log π_ref(y_l|x) (0 for the base, by
  definition), and the per-token NLL (total −log π over all negatives' tokens / their count).
- **harmful** prompts: greedy (or `temp`) responses, judged (`judges.py`): unsafe rate, refusal
  rate, and the judge's unparseable count.
- **benign** prompts: per-token KL(π || π_ref) on the policy's own responses (the full-vocabulary
  KL at each response position, summed over all responses' tokens, divided by their count),
  distinct-1/2 of the responses, the refusal rate (over-refusal shows here), and with a model
  judge the win rate against the base model's responses.

The reference's work is done once: its negative scores and its responses are cached and
reused for every adapter. Everything lands in `DIR/report.json` (each figure with its n, and the
settings), `DIR/report.md`, `DIR/responses/<model>.jsonl` and, with matplotlib, PNG plots.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import mlx.core as mx
from tqdm import tqdm

from .errors import D2OError
from .io import write_text_atomic
from .models import adapter_layers

REPORT_VERSION = 1


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
# Metrics
# ---------------------------------------------------------------------------------------------

def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al., 2016): unique n-grams / all n-grams, pooled over TEXTS.

    Words are lower-cased, whitespace-separated tokens, so the figure does not depend on the
    model's tokenizer. 0.0 when the texts hold no n-gram at all.
    """
    seen, total = set(), 0
    for t in texts:
        words = t.lower().split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def _rate(k: int, n: int) -> Optional[float]:
    return k / n if n else None


def _mean(xs: Sequence[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


def sequence_kl(policy: Callable, reference: Callable, pairs: Sequence[tuple], batch_size: int = 8, pad_id: int = 0,
                max_tokens_per_batch: int = 1024, desc: Optional[str] = None) -> tuple[list[float], list[int]]:
    """Σ_t KL(π(·|x, y_<t) || π_ref(·|x, y_<t)) over each response's tokens, and the token counts.

    POLICY and REFERENCE map tokens [N, T] to logits [N, T, V] (a model, or a model with its
    adapter switched off). PAIRS are (prompt_ids, response_ids). The KL at a position is over the
    full vocabulary; positions are those that predict a response token, as in `sequence_logps`.
    Batches are capped by MAX_TOKENS_PER_BATCH padded tokens, since two [N, T, V] logit
    tensors are alive at once.
    """
    from .logprobs import pad

    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    kls, counts = [0.0] * len(pairs), [0] * len(pairs)
    bar = tqdm(total=len(pairs), desc=desc, file=sys.stderr, disable=desc is None, leave=False)
    i = 0
    while i < len(order):
        longest = len(pairs[order[i]][0]) + len(pairs[order[i]][1])
        n = max(1, min(batch_size, max_tokens_per_batch // max(1, longest)))
        idx = order[i : i + n]
        tokens, lengths = pad([list(pairs[j][0]) + list(pairs[j][1]) for j in idx], pad_id)
        plens = mx.array([len(pairs[j][0]) for j in idx], dtype=mx.int32)
        inputs = tokens[:, :-1]
        logp = policy(inputs).astype(mx.float32)
        logp = logp - mx.logsumexp(logp, axis=-1, keepdims=True)
        logq = reference(inputs).astype(mx.float32)
        logq = logq - mx.logsumexp(logq, axis=-1, keepdims=True)
        kl = (mx.exp(logp) * (logp - logq)).sum(axis=-1)
        pos = mx.arange(1, tokens.shape[1])[None, :]
        mask = (pos >= plens[:, None]) & (pos < lengths[:, None])
        total, cnt = (kl * mask).sum(axis=-1), mask.sum(axis=-1)
        mx.eval(total, cnt)
        for j, a, c in zip(idx, total.tolist(), cnt.tolist()):
            kls[j], counts[j] = a, c
        bar.update(len(idx))
        i += n
    bar.close()
    return kls, counts


def generate(model, tokenizer, prompts: Sequence[Sequence[int]], max_tokens: int, temp: float = 0.0, seed: int = 0,
             batch_size: int = 16, desc: Optional[str] = "generating") -> list[list[int]]:
    """Token ids of a response to each prompt, batched with mlx-lm's `BatchGenerator`.

    A response that ended on an end-of-turn token keeps it (mlx-lm's `batch_generate` drops it),
    because the policy chose to stop there and its KL at that position counts.
    """
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.sample_utils import make_sampler

    if not prompts:
        return []
    mx.random.seed(seed)
    gen = BatchGenerator(model, stop_tokens=[[t] for t in tokenizer.eos_token_ids], sampler=make_sampler(temp=temp),
                         completion_batch_size=batch_size, prefill_batch_size=min(batch_size, 8))
    uids = gen.insert([list(p) for p in prompts], [max_tokens] * len(prompts))
    out = {u: [] for u in uids}
    with tqdm(total=len(prompts), desc=desc, file=sys.stderr, disable=desc is None, leave=False) as bar:
        while responses := gen.next_generated():
            for r in responses:
                out[r.uid].append(r.token)
                if r.finish_reason is not None:
                    bar.update(1)
    gen.close()
    return [out[u] for u in uids]


# ---------------------------------------------------------------------------------------------
# Adapters switched on and off one loaded base
# ---------------------------------------------------------------------------------------------

class Adapter:
    """An adapter put on a loaded base model, that can be switched off and on without reloading.

    LoRA/DoRA: mlx-lm's `load_adapters` wraps the base layers; switching swaps the wrapped and
    the wrapping modules (exact: the base layers are the same objects). Full fine-tunes: the
    tuned and the base values of the tuned parameters are swapped. `remove()` puts the base back
    for good, so the next adapter starts from the plain base.

    An adapter whose `adapter_config.json` names the fingerprint of the base it was trained on
    (`d2o.base_model_fingerprint`, written by `mlx-d2o train`) must match BASE_FINGERPRINT;
    `models.check_adapter` checks the weights' shapes either way.
    """

    def __init__(self, model, path: str | Path, base_fingerprint: Optional[str] = None):
        from mlx.utils import tree_flatten
        from mlx_lm.utils import load_adapters

        from .models import check_adapter

        self.model, self.path = model, Path(path)
        check_adapter(self.path, model)
        try:
            config = json.loads((self.path / "adapter_config.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise D2OError(f"{self.path / 'adapter_config.json'}: cannot read ({e})") from None
        self.config = config
        made_for = (config.get("d2o") or {}).get("base_model_fingerprint")
        if base_fingerprint and made_for and made_for != base_fingerprint:
            raise D2OError(f"{self.path}: this adapter was trained on another base model (fingerprint {made_for} in "
                           f"adapter_config.json, the model given has {base_fingerprint})")
        self.full = config.get("fine_tune_type", "lora") == "full"
        if self.full:
            tuned = mx.load(str(self.path / "adapters.safetensors"))
            params = dict(tree_flatten(model.parameters()))
            bad = [k for k, v in tuned.items() if k not in params or params[k].shape != v.shape]
            if bad:
                raise D2OError(f"{self.path}: weights {', '.join(bad[:3])} do not fit the model: "
                               "this adapter was made for another base model")
            self._on, self._off = list(tuned.items()), [(k, params[k]) for k in tuned]
            self._set(True)
        else:
            try:
                load_adapters(model, str(self.path))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                self._restore_base()
                raise D2OError(f"{self.path}: cannot apply this adapter to {type(model).__name__} ({e})") from None
            layers = adapter_layers(model)
            self._on = [(k, wrapper) for k, wrapper, _ in layers]
            self._off = [(k, base) for k, _, base in layers]
        model.eval()

    def _restore_base(self):
        from mlx.utils import tree_unflatten

        base = [(k, b) for k, _, b in adapter_layers(self.model)]
        if base:
            self.model.update_modules(tree_unflatten(base))

    def _set(self, on: bool):
        from mlx.utils import tree_unflatten

        items = self._on if on else self._off
        if self.full:
            self.model.update(tree_unflatten(items))
        else:
            self.model.update_modules(tree_unflatten(items))

    @contextlib.contextmanager
    def disabled(self):
        """The base model (π_ref) inside the block, the adapted one after it."""
        self._set(False)
        try:
            yield self.model
        finally:
            self._set(True)

    def remove(self):
        self._set(False)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

def _load_set(spec: Optional[str], what: str, require_rejected: bool, limit: Optional[int]):
    from .data import load_records

    if spec is None:
        return None
    p = Path(str(spec))
    # A path to a data file that is not there is a typo, not a Hub dataset id to go and fetch.
    if not p.exists() and (p.suffix in (".jsonl", ".json", ".gz") or str(spec).startswith((".", "/", "~"))):
        raise D2OError(f"{spec}: no such file ({what})")
    records = load_records(spec, require_rejected=require_rejected)
    return records[:limit] if limit else records


def _row_names(paths: Sequence[str]) -> list[str]:
    names = ["base"]
    for p in paths:
        name = Path(p).name or str(p)
        if name in names:
            name = str(p)
        names.append(name)
    return names


def _data_info(spec, records):
    from .data import data_fingerprint

    return None if spec is None else {"file": str(spec), "n": len(records), "fingerprint": data_fingerprint(records)}


class _Run:
    """State shared by all rows of one run: the base model, encoded inputs, the judge, and the
    reference's results (its negative scores and its benign responses), computed once."""

    def __init__(self, args: EvalArgs):
        from .data import prompt_tokens, response_tokens
        from .judges import make_judge
        from .models import load

        self.args = args
        n = args.num_prompts
        self.negatives = _load_set(args.negatives, "--negatives", True, n)
        self.harmful = _load_set(args.prompts, "--prompts", False, n) or []
        self.benign = _load_set(args.benign, "--benign", False, n) or []
        if self.negatives is None and not self.harmful and not self.benign:
            raise D2OError("nothing to evaluate: give at least one of --negatives, --prompts, --benign")
        for p in args.adapter_paths:
            if not Path(p).is_dir():
                raise D2OError(f"{p}: no such adapter directory")
        if Path(args.output).exists() and not Path(args.output).is_dir():
            raise D2OError(f"--output {args.output}: exists and is not a directory")
        self.model, self.tok, self.info = load(args.model, return_info=True)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        # Refuse a mismatched adapter or judge before any long work starts.
        for p in args.adapter_paths:
            Adapter(self.model, p, self.info.fingerprint).remove()
        self.judge = make_judge(args.judge)

        self.neg_pairs = []
        for r in self.negatives or []:
            p = prompt_tokens(self.tok, self.conversation(r))
            self.neg_pairs.append((p, response_tokens(self.tok, self.conversation(r), r.rejected, p)))
        self.harm_prompts = [prompt_tokens(self.tok, self.conversation(r)) for r in self.harmful]
        self.benign_prompts = [prompt_tokens(self.tok, self.conversation(r)) for r in self.benign]
        self.ref_logps = None  # the base's log π of each negative
        self.ref_benign = None  # the base's responses to the benign prompts

    def conversation(self, record) -> list:
        from .data import with_system

        return with_system(record.messages, self.args.system_prompt)

    def _text(self, ids) -> str:
        eos = self.tok.eos_token_ids
        return self.tok.decode([t for t in ids if t not in eos])

    def _generate(self, name) -> tuple[list, list]:
        """Responses to the harmful and the benign prompts, in one batched call.

        One call instead of one per set keeps the batch full for longer: a batch's tail, when
        a few long responses decode alone, is paid once, not twice.
        """
        a = self.args
        ids = generate(self.model, self.tok, self.harm_prompts + self.benign_prompts, a.max_tokens, temp=a.temp,
                       seed=a.seed, batch_size=a.batch_size, desc=f"{name}: generating")
        return ids[: len(self.harm_prompts)], ids[len(self.harm_prompts):]

    def negatives_metrics(self, adapter: Optional[Adapter]) -> dict:
        from .logprobs import score

        logps, counts = score(self.model, self.neg_pairs, self.args.batch_size, self.pad_id)
        if adapter is None:
            self.ref_logps = logps
        return {
            "n": len(logps),
            "tokens": sum(counts),
            "logps": _mean(logps),
            "logratio": 0.0 if adapter is None else _mean([lp - r for lp, r in zip(logps, self.ref_logps)]),
            "nll_per_token": -sum(logps) / max(1, sum(counts)),
        }

    def harmful_metrics(self, ids: list) -> tuple[dict, list]:
        from .judges import UNPARSEABLE, UNSAFE, is_refusal

        texts = [self._text(x) for x in ids]
        verdicts = self.judge.safety([self.conversation(r) for r in self.harmful], texts)
        refusals = [is_refusal(t) for t in texts]
        n = len(texts)
        m = {
            "n": n,
            "judge": self.judge.name,
            "unsafe_rate": _rate(verdicts.count(UNSAFE), n),
            "refusal_rate": _rate(sum(refusals), n),
            "unsafe": verdicts.count(UNSAFE),
            "refusals": sum(refusals),
            "unparseable": verdicts.count(UNPARSEABLE),
            "mean_tokens": _mean([len(x) for x in ids]),
        }
        dump = [{"set": "harmful", "id": r.id, "response": t, "verdict": v, "refusal": f}
                for r, t, v, f in zip(self.harmful, texts, verdicts, refusals)]
        for d, ans in zip(dump, getattr(self.judge, "last_answers", [])):
            d["judge_answer"] = ans
        return m, dump

    def benign_metrics(self, name: str, ids: list, adapter: Optional[Adapter]) -> tuple[dict, list]:
        from .judges import UNPARSEABLE, is_refusal

        texts = [self._text(x) for x in ids]
        if adapter is None:
            # The reference against itself: exactly 0, no need to run it twice.
            kls, counts = [0.0] * len(ids), [len(x) for x in ids]
            self.ref_benign = texts
        else:
            kls, counts = sequence_kl(self.model, _Reference(adapter), list(zip(self.benign_prompts, ids)),
                                      self.args.batch_size, self.pad_id, desc=f"{name}: KL")
        refusals = [is_refusal(t) for t in texts]
        n = len(texts)
        m = {
            "n": n,
            "tokens": sum(counts),
            "kl_per_token": sum(kls) / max(1, sum(counts)),
            "distinct_1": distinct_n(texts, 1),
            "distinct_2": distinct_n(texts, 2),
            "refusal_rate": _rate(sum(refusals), n),
            "refusals": sum(refusals),
            "mean_tokens": _mean([len(x) for x in ids]),
            "win_rate": None,
        }
        results, answers = [None] * n, []
        if self.judge.can_compare and adapter is not None:
            results = self.judge.compare([self.conversation(r) for r in self.benign], texts, self.ref_benign)
            answers = self.judge.last_answers
            wins, losses = results.count("win"), results.count("loss")
            m.update(win_rate=_rate(wins, wins + losses), wins=wins, losses=losses,
                     unparseable=results.count(UNPARSEABLE), judge=self.judge.name)
        dump = [{"set": "benign", "id": r.id, "response": t, "refusal": f, "kl": k, "tokens": c, "vs_base": w}
                for r, t, f, k, c, w in zip(self.benign, texts, refusals, kls, counts, results)]
        for d, ans in zip(dump, answers):
            d["judge_answer"] = ans
        return m, dump

    def row(self, name: str, adapter: Optional[Adapter]) -> tuple[dict, list]:
        """One table row (the base when ADAPTER is None, which must come first) and its responses."""
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


def evaluate(args: EvalArgs) -> dict:
    """Run every measurement for the base and each adapter; write the report; return it.

    Returns the report (as written to `report.json`), with `paths` to the files written.
    """
    t0 = time.time()
    run = _Run(args)
    names = _row_names(args.adapter_paths)
    rows, dumps = [], {}
    for name, path in zip(names, [None] + list(args.adapter_paths)):
        adapter = Adapter(run.model, path, run.info.fingerprint) if path is not None else None
        try:
            row, dump = run.row(name, adapter)
        finally:
            if adapter is not None:
                adapter.remove()
        if path is not None:
            row["adapter_config"] = adapter.config
        rows.append(row)
        dumps[name] = dump
    report = {
        "version": REPORT_VERSION,
        "settings": {
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
        },
        "rows": rows,
        "seconds": round(time.time() - t0, 1),
    }
    write_report(report, dumps, args.adapter_paths, Path(args.output))
    return report


# ---------------------------------------------------------------------------------------------
# Report files
# ---------------------------------------------------------------------------------------------

def _write_atomic(path: Path, text: str) -> None:
    write_text_atomic(path, text)


def _fmt(v, spec=".3f", pct=False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{100 * v:.1f}%" if pct else format(v, spec)


# (column header, section, key, format, as percent)
COLUMNS = (
    ("log π(neg)", "negatives", "logps", ".2f", False),
    ("log-ratio(neg)", "negatives", "logratio", "+.2f", False),
    ("NLL/token(neg)", "negatives", "nll_per_token", ".3f", False),
    ("unsafe", "harmful", "unsafe_rate", "", True),
    ("refusal (harmful)", "harmful", "refusal_rate", "", True),
    ("KL/token (benign)", "benign", "kl_per_token", ".4f", False),
    ("distinct-1", "benign", "distinct_1", ".3f", False),
    ("distinct-2", "benign", "distinct_2", ".3f", False),
    ("refusal (benign)", "benign", "refusal_rate", "", True),
    ("win vs base", "benign", "win_rate", "", True),
)


def markdown_table(rows: Sequence[dict]) -> str:
    cols = [c for c in COLUMNS if any(c[1] in r for r in rows)]
    if not any(r.get("benign", {}).get("win_rate") is not None for r in rows):
        cols = [c for c in cols if c[2] != "win_rate"]
    lines = ["| model | " + " | ".join(c[0] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in rows:
        cells = [_fmt(r.get(sec, {}).get(key), spec, pct) for _, sec, key, spec, pct in cols]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    s = report["settings"]
    sampling = "greedy" if not s["temp"] else f"temp {s['temp']}"
    ns = {k: s[k]["n"] for k in ("negatives", "prompts", "benign") if s.get(k)}
    lines = [
        "# mlx-d2o eval",
        "",
        f"Base model (reference, first row): `{s['model']}` (fingerprint {s['model_fingerprint']}). "
        f"Judge: `{s['judge']}`. Generation: {sampling}, "
        f"max {s['max_tokens']} tokens, seed {s['seed']}.",
        "Items: " + ", ".join(f"{k} n={v}" for k, v in ns.items()) + ".",
        "",
        markdown_table(report["rows"]),
        "",
        "- log π(neg): mean summed log-probability of a held-out human negative; log-ratio: the same "
        "minus the base model's (lower = more forgotten). NLL/token: −Σ log π / tokens over all negatives.",
        "- unsafe / refusal: share of responses to harmful prompts the judge calls unsafe / that contain "
        "a refusal marker (`mlx_d2o/judges.py`).",
        "- KL/token: KL(policy || base) per response token on the policy's own answers to benign prompts; "
        "distinct-n: unique word n-grams / all n-grams; win vs base: judge's pairwise preference over the "
        "base model's answer (ties of order cancelled by alternating it).",
    ]
    unparse = [(r["name"], r[k]["unparseable"]) for r in report["rows"] for k in ("harmful", "benign")
               if r.get(k, {}).get("unparseable")]
    if unparse:
        lines.append("- unparseable judge verdicts (not counted either way): " + ", ".join(f"{n}: {u}" for n, u in unparse))
    for note in report.get("notes", []):
        lines.append(f"- {note}")
    if report.get("plots"):
        lines += [""] + [f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict, dumps: dict, adapter_paths: Sequence[str], out: Path) -> None:
    from . import plots
    from .data import write_jsonl_atomic

    out.mkdir(parents=True, exist_ok=True)
    for name, rows in dumps.items():
        if rows:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            write_jsonl_atomic(out / "responses" / f"{safe}.jsonl", rows)
    report["notes"], report["plots"] = [], []
    if plots.available():
        curves = {name: Path(p) / "metrics.jsonl" for name, p in zip(_row_names(adapter_paths)[1:], adapter_paths)}
        made = plots.training_curves({k: v for k, v in curves.items() if v.exists()}, out / "training_curves.png")
        if made:
            report["plots"].append(str(made))
        report["plots"].append(str(plots.comparison(report["rows"], out / "comparison.png")))
    else:
        report["notes"].append("plots skipped: matplotlib is not installed (pip install 'mlx-d2o[plots]')")
    report["paths"] = {"json": str(out / "report.json"), "markdown": str(out / "report.md")}
    _write_atomic(out / "report.md", markdown_report(report))
    _write_atomic(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
