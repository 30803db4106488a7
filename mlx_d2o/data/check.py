"""`mlx-d2o data check`: counts, token lengths and problems of a records file."""

from __future__ import annotations

import json

from .chat import encode_record
from .records import data_fingerprint, load_records


def length_stats(values: list[int]) -> dict:
    if not values:
        return {"n": 0}
    v = sorted(values)

    def pct(q):
        return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]

    return {
        "n": len(v),
        "min": v[0],
        "mean": round(sum(v) / len(v), 1),
        "p50": pct(0.5),
        "p95": pct(0.95),
        "max": v[-1],
    }


def check_file(spec: str, tokenizer, limit: int, require_rejected: bool = True) -> dict:
    """Counts, token-length statistics and problems of a records file (`mlx-d2o data check`).

    TOKENIZER measures lengths against LIMIT (the model's context or --max-seq-length).
    Schema errors raise (file:line). `errors` lists records no step can use (a prompt that
    leaves no room for a response); `problems` lists what does not stop training.
    """
    records = load_records(spec, require_rejected=require_rejected)
    tok = tokenizer
    prompts, rejected, chosen, problems, errors, seen = [], [], [], [], [], {}
    for r in records:
        enc = encode_record(tok, r)
        prompts.append(len(enc["prompt"]))
        if "rejected" in enc:
            rejected.append(len(enc["rejected"]))
        if "chosen" in enc:
            chosen.append(len(enc["chosen"]))
        total = len(enc["prompt"]) + max(len(enc.get("rejected", [])), len(enc.get("chosen", [])))
        if len(enc["prompt"]) >= limit:
            errors.append(
                f"{r.where}: field 'messages': the prompt is {len(enc['prompt'])} tokens, "
                f"leaving no room for a response within the limit of {limit}"
            )
        elif total > limit:
            problems.append(
                f"{r.id}: prompt + response is {total} tokens, over the limit {limit} (will be truncated)"
            )
        key = json.dumps(r.messages, sort_keys=True)
        if key in seen:
            problems.append(f"{r.id}: same prompt as {seen[key]}")
        seen.setdefault(key, r.id)
        if r.chosen is not None and r.chosen.strip() == (r.rejected or "").strip():
            problems.append(f"{r.id}: chosen and rejected are the same text")
    return {
        "file": str(spec),
        "records": len(records),
        "with_chosen": sum(r.chosen is not None for r in records),
        "multi_turn": sum(sum(m["role"] == "user" for m in r.messages) > 1 for r in records),
        "data_fingerprint": data_fingerprint(records),
        "token_limit": limit,
        "prompt_tokens": length_stats(prompts),
        "rejected_tokens": length_stats(rejected),
        "chosen_tokens": length_stats(chosen),
        "problems": problems,
        "errors": errors,
    }
