"""Negatives-only records: schema, loading, validation, converters and chat rendering.

A record is one prompt (a dialogue ending with a user turn) with one human-labelled dispreferred
response; `chosen` is optional and only the DPO baseline uses it:

    {"id"?: str, "prompt": str | "messages": [{"role", "content"}, ...], "rejected": str, "chosen"?: str}

Every problem is reported as `file:line: field '...': what is wrong`, and raised as `D2OError`
(exit code 2 in the CLI).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

from .errors import D2OError, where
from .io import atomic_path

ROLES = ("system", "user", "assistant")


@dataclass
class Record:
    id: str
    messages: list  # the prompt: [{"role", "content"}, ...], ending with a user turn
    rejected: Optional[str] = None
    chosen: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {"id": self.id, "messages": self.messages}
        if self.rejected is not None:
            d["rejected"] = self.rejected
        if self.chosen is not None:
            d["chosen"] = self.chosen
        d.update(self.extra)
        return d


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def _open_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for i, line in enumerate(f, 1):
                yield i, line
    except (OSError, EOFError) as e:
        raise D2OError(f"{path}: cannot read ({e})") from e


def read_json_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line, object) for each row of a .jsonl / .jsonl.gz / .json file; malformed input names file:line."""
    path = Path(path)
    if not path.exists():
        raise D2OError(f"{path}: no such file")
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith(".json"):
        raw = b"".join(line for _, line in _open_lines(path))
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise D2OError(f"{where(path, line)}: invalid UTF-8 ({e.reason})") from None
        except json.JSONDecodeError as e:
            raise D2OError(f"{where(path, e.lineno)}: malformed JSON ({e.msg})") from None
        rows = obj.get("data", obj.get("rows")) if isinstance(obj, dict) else obj
        if not isinstance(rows, list):
            raise D2OError(f"{path}: a .json data file must hold a list of objects (or {{\"data\": [...]}})")
        for i, row in enumerate(rows, 1):
            # A .json list has no useful line numbers; the row index stands in for them.
            yield i, row
        return
    for lineno, raw in _open_lines(path):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise D2OError(f"{where(path, lineno)}: invalid UTF-8 at byte {e.start} ({e.reason})") from None
        if not text.strip():
            continue
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as e:
            raise D2OError(f"{where(path, lineno)}: malformed JSON ({e.msg} at column {e.colno})") from None


def _check_str(value, path, line, name, *, required=True, nonempty=True) -> Optional[str]:
    if value is None:
        if required:
            raise D2OError(f"{where(path, line, name)}: missing")
        return None
    if not isinstance(value, str):
        raise D2OError(f"{where(path, line, name)}: must be a string, got {type(value).__name__}")
    if nonempty and not value.strip():
        raise D2OError(f"{where(path, line, name)}: empty")
    return value


def parse_messages(value, path, line, name="messages") -> list:
    if not isinstance(value, list) or not value:
        raise D2OError(f"{where(path, line, name)}: must be a non-empty list of {{role, content}} objects")
    out = []
    for j, m in enumerate(value):
        f = f"{name}[{j}]"
        if not isinstance(m, dict):
            raise D2OError(f"{where(path, line, f)}: must be an object with 'role' and 'content'")
        role = m.get("role")
        if role not in ROLES:
            raise D2OError(f"{where(path, line, f + '.role')}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        content = _check_str(m.get("content"), path, line, f + ".content", nonempty=role != "system")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise D2OError(f"{where(path, line, name)}: the prompt must end with a user turn, not {out[-1]['role']!r}")
    return out


def parse_record(obj, path, line, require_rejected: bool = True) -> Record:
    if not isinstance(obj, dict):
        raise D2OError(f"{where(path, line)}: each row must be a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        messages = parse_messages(obj["messages"], path, line)
    elif "prompt" in obj:
        messages = [{"role": "user", "content": _check_str(obj["prompt"], path, line, "prompt")}]
    else:
        raise D2OError(f"{where(path, line)}: needs a 'prompt' string or a 'messages' list")
    rid = obj.get("id", f"{Path(path).name}:{line}")
    if not isinstance(rid, (str, int)):
        raise D2OError(f"{where(path, line, 'id')}: must be a string, got {type(rid).__name__}")
    rejected = _check_str(obj.get("rejected"), path, line, "rejected", required=require_rejected)
    chosen = _check_str(obj.get("chosen"), path, line, "chosen", required=False)
    known = {"id", "messages", "prompt", "rejected", "chosen"}
    return Record(str(rid), messages, rejected, chosen, {k: v for k, v in obj.items() if k not in known})


_LOCAL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".gz")


def is_hub_dataset(spec: str) -> bool:
    """`org/name[:split]` that is not a local path. A missing `data/x.jsonl` is a typo to report,
    not a Hub id to fetch, so names with a data-file suffix never go to the network."""
    p = Path(spec)
    if p.exists() or spec.startswith((".", "/", "~")) or spec.endswith(_LOCAL_SUFFIXES):
        return False
    return re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w.-]+)?", spec) is not None


def hub_data_file(spec: str) -> Path:
    """Download the JSON(L) file of a Hub dataset repo: `org/name` or `org/name:split`."""
    from huggingface_hub import HfApi, hf_hub_download

    repo, _, split = spec.partition(":")
    split = split or "train"
    try:
        files = HfApi().list_repo_files(repo, repo_type="dataset")
        cands = [f for f in files if f.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")) and split in Path(f).name]
        if not cands:
            raise D2OError(f"dataset {repo} has no JSON/JSONL file for split '{split}' (files: {', '.join(files[:20])})")
        return Path(hf_hub_download(repo, sorted(cands)[0], repo_type="dataset"))
    except D2OError:
        raise
    except Exception as e:
        raise D2OError(
            f"could not fetch dataset '{repo}' from the Hugging Face Hub ({type(e).__name__}: {e}). "
            "Offline? Pass a local .jsonl file instead."
        ) from e


def resolve_data(spec: str | Path) -> Path:
    spec = str(spec)
    return hub_data_file(spec) if is_hub_dataset(spec) else Path(spec)


def load_records(spec: str | Path, require_rejected: bool = True) -> list[Record]:
    """Read and validate all records of a file (or Hub dataset); duplicate ids are an error."""
    path = resolve_data(spec)
    records, seen = [], {}
    for line, obj in read_json_rows(path):
        r = parse_record(obj, path, line, require_rejected)
        if r.id in seen:
            raise D2OError(f"{where(path, line, 'id')}: duplicate id {r.id!r} (first on line {seen[r.id]})")
        seen[r.id] = line
        records.append(r)
    if not records:
        raise D2OError(f"{path}: no records")
    return records


def data_fingerprint(records: Iterable[Record]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.to_json(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows to PATH through a temp file and a rename: a failure leaves no partial file."""
    path = Path(path)
    n = 0
    with atomic_path(path) as tmp:
        with (gzip.open(tmp, "wt", encoding="utf-8") if path.suffix == ".gz" else open(tmp, "w", encoding="utf-8")) as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Converters
# ---------------------------------------------------------------------------------------------

_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


def hh_turns(text: str) -> list[dict]:
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise ValueError("text before the first '\\n\\nHuman:' turn")
    turns = []
    for role, content in zip(parts[1::2], parts[2::2]):
        turns.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    return turns


def convert_hh_rlhf(row: dict, path, line) -> list[dict]:
    """HH-RLHF: the dialogue before the last assistant turn is the prompt; that turn of `rejected`
    is the negative (and the one of `chosen`, when the dialogues share the prompt, the positive)."""
    rej = _check_str(row.get("rejected") if isinstance(row, dict) else None, path, line, "rejected")
    try:
        turns = hh_turns(rej)
    except ValueError as e:
        raise D2OError(f"{where(path, line, 'rejected')}: not an HH-RLHF dialogue ({e})") from None
    if len(turns) < 2 or turns[-1]["role"] != "assistant" or turns[-2]["role"] != "user":
        raise D2OError(f"{where(path, line, 'rejected')}: must end with a Human turn then an Assistant turn")
    if not turns[-1]["content"]:
        raise D2OError(f"{where(path, line, 'rejected')}: the last Assistant turn is empty")
    out = {"id": str(row.get("id", f"hh-{line}")), "messages": turns[:-1], "rejected": turns[-1]["content"]}
    if isinstance(row.get("chosen"), str):
        try:
            ch = hh_turns(row["chosen"])
        except ValueError:
            ch = []
        if len(ch) == len(turns) and ch[:-1] == turns[:-1] and ch[-1]["role"] == "assistant" and ch[-1]["content"]:
            out["chosen"] = ch[-1]["content"]
    return [out]


def convert_pku_saferlhf(row: dict, path, line) -> list[dict]:
    """PKU-SafeRLHF: one record per response marked unsafe; a safe sibling becomes `chosen`."""
    if not isinstance(row, dict):
        raise D2OError(f"{where(path, line)}: each row must be a JSON object")
    prompt = _check_str(row.get("prompt"), path, line, "prompt")
    out = []
    for i in (0, 1):
        resp = _check_str(row.get(f"response_{i}"), path, line, f"response_{i}", nonempty=False)
        safe = row.get(f"is_response_{i}_safe")
        if not isinstance(safe, bool):
            raise D2OError(f"{where(path, line, f'is_response_{i}_safe')}: must be true or false")
        if safe or not resp.strip():
            continue
        rec = {"id": f"{row.get('id', f'pku-{line}')}-{i}", "prompt": prompt, "rejected": resp}
        other = row.get(f"response_{1 - i}")
        if row.get(f"is_response_{1 - i}_safe") is True and isinstance(other, str) and other.strip():
            rec["chosen"] = other
        out.append(rec)
    return out


CONVERTERS = {"hh-rlhf": convert_hh_rlhf, "pku-saferlhf": convert_pku_saferlhf}


def convert(fmt: str, src: str | Path, dst: str | Path) -> tuple[int, int]:
    """Convert a source dataset to records; returns (rows read, records written)."""
    if fmt not in CONVERTERS:
        raise D2OError(f"unknown format {fmt!r} (expected one of {', '.join(CONVERTERS)})")
    conv = CONVERTERS[fmt]
    path = resolve_data(src)
    rows, out = 0, []
    for line, obj in read_json_rows(path):
        rows += 1
        out.extend(conv(obj, path, line))
    if not out:
        raise D2OError(f"{path}: no records came out of {rows} rows")
    return rows, write_jsonl_atomic(dst, out)


# ---------------------------------------------------------------------------------------------
# Chat rendering
# ---------------------------------------------------------------------------------------------

def with_system(messages: list, system_prompt: Optional[str]) -> list:
    """Put SYSTEM_PROMPT first (replacing any system turn the record has)."""
    if not system_prompt:
        return messages
    return [{"role": "system", "content": system_prompt}] + [m for m in messages if m["role"] != "system"]


def prompt_tokens(tokenizer, messages: list) -> list[int]:
    """The chat template with add_generation_prompt=True: what the model sees before it answers."""
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))


def end_of_turn_ids(tokenizer) -> set:
    ids = set(getattr(tokenizer, "eos_token_ids", None) or [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def response_tokens(tokenizer, messages: list, response: str, prompt: Optional[list] = None) -> list[int]:
    """Tokens of RESPONSE as the template writes it after the prompt, through its end-of-turn token.

    Rendering the whole conversation and cutting at the prompt keeps whatever the template adds
    (e.g. ChatML's `<|im_end|>`) exactly as the model was trained to see it. What the template
    writes after the end-of-turn token (a newline) belongs to the next turn and is dropped.
    """
    prompt = prompt_tokens(tokenizer, messages) if prompt is None else prompt
    full = list(tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=True))
    eot = end_of_turn_ids(tokenizer)
    if full[: len(prompt)] != prompt:
        # Templates that rewrite earlier turns (e.g. strip reasoning) break the prefix property;
        # fall back to the response's own tokens followed by end-of-turn.
        ids = tokenizer.encode(response, add_special_tokens=False)
        return ids + ([min(eot)] if eot else [])
    resp = full[len(prompt):]
    for i, t in enumerate(resp):
        if t in eot:
            return resp[: i + 1]
    return resp


def encode_record(tokenizer, record: Record) -> dict:
    """Prompt and response token ids of a record (rejected, and chosen when present)."""
    p = prompt_tokens(tokenizer, record.messages)
    out = {"prompt": p}
    if record.rejected is not None:
        out["rejected"] = response_tokens(tokenizer, record.messages, record.rejected, p)
    if record.chosen is not None:
        out["chosen"] = response_tokens(tokenizer, record.messages, record.chosen, p)
    return out


def check_lengths(records: list, tokenizer, max_length: int, path="data") -> None:
    """Refuse a record whose prompt alone does not fit the model's context."""
    for r in records:
        n = len(prompt_tokens(tokenizer, r.messages))
        if n >= max_length:
            raise D2OError(f"{path}: record {r.id!r}: field 'messages': the prompt is {n} tokens, "
                           f"longer than the model's context of {max_length}")


def length_stats(values: list[int]) -> dict:
    if not values:
        return {"n": 0}
    v = sorted(values)
    pct = lambda q: v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]
    return {"n": len(v), "min": v[0], "mean": round(sum(v) / len(v), 1), "p50": pct(0.5), "p95": pct(0.95), "max": v[-1]}


def load_tokenizer(model: str):
    """Just the tokenizer of MODEL (no weights loaded), with its context length."""
    from mlx_lm.utils import load_config
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    from .models import model_dir

    path = model_dir(model)
    config = load_config(path)
    return mlx_load_tokenizer(path, eos_token_ids=config.get("eos_token_id")), config.get("max_position_embeddings")


def check_file(spec: str, model: str, max_seq_length: Optional[int] = None, require_rejected: bool = True) -> dict:
    """Counts, token-length statistics and problems of a records file (`mlx-d2o data check`).

    Schema errors raise (file:line); problems that do not stop training are listed.
    """
    records = load_records(spec, require_rejected=require_rejected)
    tok, context = load_tokenizer(model)
    limit = max_seq_length or context or 2048
    prompts, rejected, chosen, problems, seen = [], [], [], [], {}
    for r in records:
        enc = encode_record(tok, r)
        prompts.append(len(enc["prompt"]))
        if "rejected" in enc:
            rejected.append(len(enc["rejected"]))
        if "chosen" in enc:
            chosen.append(len(enc["chosen"]))
        total = len(enc["prompt"]) + max(len(enc.get("rejected", [])), len(enc.get("chosen", [])))
        if len(enc["prompt"]) >= limit:
            problems.append(f"{r.id}: prompt is {len(enc['prompt'])} tokens, not shorter than the limit {limit}")
        elif total > limit:
            problems.append(f"{r.id}: prompt + response is {total} tokens, over the limit {limit} (will be truncated)")
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
    }
