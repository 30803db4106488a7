"""Sample cache rows -> training examples -> length-grouped batches -> token arrays.

One example is a prompt with the sequences its loss reads (`losses.ROWS`: the K cached samples,
the human negative, a `chosen` response for DPO), tokenized exactly as the reference scored
them (a sample cut at --max-tokens is the prefix it was generated as, without end-of-turn:
`sample.cache.sample_responses`), with the reference log-probs the cache holds for them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import mlx.core as mx
import numpy as np

from .. import data as D
from .. import losses
from ..errors import D2OError
from ..logprobs import pad, score
from ..sample.cache import read_cache as read
from ..sample.cache import sample_responses
from ..shared_prompt import pack


@dataclass
class Example:
    """One prompt, tokenized exactly as the reference scored it."""

    id: str
    messages: list
    prompt: list
    negative: list
    samples: list  # K token lists
    ref_negative: float
    ref_samples: list
    chosen: Optional[list] = None
    ref_chosen: Optional[float] = None
    row: dict = field(default_factory=dict, repr=False)

    def length(self) -> int:
        responses = [self.negative, *self.samples, self.chosen or []]
        return len(self.prompt) + max(len(r) for r in responses)

    def responses(self, row: str) -> list:
        """The token lists of one kind of row (`losses.ROWS`): K samples, or one response."""
        return self.samples if row == "samples" else [getattr(self, row)]

    def ref(self, row: str):
        """The reference log-probs of one kind of row: a list of K, or one number."""
        return getattr(self, f"ref_{row}")


def read_cache(path) -> tuple[dict, list]:
    """(manifest, rows) of a sample cache, through the sample step's reader."""
    path = Path(path)
    if not path.is_dir():
        raise D2OError(f"{path}: no such sample cache (make one with `mlx-d2o sample`)")
    manifest, rows = read(path)
    if not rows:
        raise D2OError(f"{path}: the cache holds no rows")
    return manifest, rows


def build_examples(rows: list, tokenizer, args, path) -> tuple[list, list]:
    """Tokenize cache rows; returns (examples, rows_to_rescore).

    A sequence longer than --max-seq-length keeps its prompt and loses the end of its response;
    its cached reference score was for the whole response, so it is listed for re-scoring with
    the reference model (`rescore`), never paired with a score of other tokens. Rows whose
    prompt alone leaves no room for a response are skipped with a warning.
    """
    reader = _RowReader(tokenizer, losses.get(args.loss), args.max_seq_length, path)
    examples, to_rescore, skipped = [], [], []
    for i, row in enumerate(rows, 1):
        rid = str(row.get("id", i))
        ex = reader.example(row, rid, to_rescore)
        if ex is None:
            skipped.append(rid)
        else:
            examples.append(ex)
    if skipped:
        more = "..." if len(skipped) > 5 else ""
        print(
            f"warning: {len(skipped)} rows skipped: their prompt alone fills --max-seq-length "
            f"{args.max_seq_length} ({', '.join(skipped[:5])}{more})",
            file=sys.stderr,
        )
    if not examples:
        raise D2OError(f"{path}: no row fits --max-seq-length {args.max_seq_length}")
    return examples, to_rescore


class _RowReader:
    """Turns the rows of one cache into `Example`s for one loss; K is the first row's."""

    def __init__(self, tokenizer, loss: losses.Loss, max_seq_length: int, path):
        self.tokenizer, self.loss, self.max_len, self.path = tokenizer, loss, max_seq_length, path
        self.K = None

    def check(self, row: dict, rid: str) -> None:
        ref = row.get("ref_logps")
        if (
            not isinstance(ref, dict)
            or "rejected" not in ref
            or (self.loss.uses("samples") and "samples" not in ref)
        ):
            raise D2OError(
                f"{self.path}: row {rid!r}: field 'ref_logps': missing; the cache has no "
                "reference scores (run `mlx-d2o sample` to the end, or let it resume)"
            )
        if self.loss.uses("chosen") and not row.get("chosen"):
            raise D2OError(
                f"{self.path}: row {rid!r}: field 'chosen': missing; --loss {self.loss.name} "
                "needs data with a 'chosen' response for every prompt (use d2o, npo or ga for "
                "negatives-only data)"
            )

    def tokens(self, rid, msgs, prompt, text, cached_count, what, ids=None) -> tuple[list, bool]:
        """Response tokens (IDS, else TEXT as the template writes it) cut to the room the prompt
        leaves, and whether they were cut."""
        ids = D.response_tokens(self.tokenizer, msgs, text, prompt) if ids is None else ids
        if cached_count is not None and cached_count != len(ids):
            raise D2OError(
                f"{self.path}: row {rid!r}: field 'ref_tokens.{what}': the reference scored "
                f"{cached_count} tokens but this model's tokenizer gives {len(ids)}; the cache "
                "was made with another tokenizer or system prompt"
            )
        room = self.max_len - len(prompt)
        return ids[:room], len(ids) > room

    def example(self, row: dict, rid: str, to_rescore: list) -> Optional[Example]:
        self.check(row, rid)
        # The row's own messages: `sample` puts --system-prompt first while generating only,
        # and scores (so we train) on the record's prompt.
        msgs = row["messages"]
        prompt = D.prompt_tokens(self.tokenizer, msgs)
        if len(prompt) >= self.max_len - 1:
            return None
        ref, counts = row["ref_logps"], row.get("ref_tokens") or {}
        negative, cut = self.tokens(
            rid, msgs, prompt, row["rejected"], counts.get("rejected"), "rejected"
        )
        ex = Example(rid, msgs, prompt, negative, [], float(ref["rejected"]), [], row=row)
        if cut:
            to_rescore.append((ex, "negative", None))
        if self.loss.uses("samples"):
            self.add_samples(ex, row, rid, to_rescore)
        if self.loss.uses("chosen"):
            ex.chosen, cut = self.tokens(
                rid, msgs, prompt, row["chosen"], counts.get("chosen"), "chosen"
            )
            ex.ref_chosen = ref.get("chosen")
            if cut or ex.ref_chosen is None:
                to_rescore.append((ex, "chosen", None))
        return ex

    def add_samples(self, ex: Example, row: dict, rid: str, to_rescore: list) -> None:
        texts, ref = row["samples"], row["ref_logps"]["samples"]
        counts = (row.get("ref_tokens") or {}).get("samples") or [None] * len(texts)
        if self.K is None:
            self.K = len(texts)
        if len(texts) != self.K or len(ref) != self.K:
            raise D2OError(
                f"{self.path}: row {rid!r}: field 'samples': {len(texts)} samples, expected "
                f"K={self.K} like the rows before"
            )
        # A sample cut at --max-tokens is its generated ids, no end-of-turn (the cache's rule).
        responses = sample_responses(self.tokenizer, row, ex.prompt)
        for k, (text, n, resp) in enumerate(zip(texts, counts, responses)):
            ids, cut = self.tokens(rid, ex.messages, ex.prompt, text, n, f"samples[{k}]", resp)
            ex.samples.append(ids)
            ex.ref_samples.append(float(ref[k]))
            if cut:
                to_rescore.append((ex, "samples", k))


def rescore(model, rescore_list: list, batch_size: int = 8) -> None:
    """Reference log-probs of truncated sequences (and of `chosen` when the cache lacks them).

    MODEL must be the reference: the base before any adapter exists, or inside
    `reference_model`."""
    if not rescore_list:
        return
    pairs = [
        (ex.prompt, ex.samples[k] if what == "samples" else getattr(ex, what))
        for ex, what, k in rescore_list
    ]
    logps, _ = score(model, pairs, batch_size)
    for (ex, what, k), lp in zip(rescore_list, logps):
        if what == "samples":
            ex.ref_samples[k] = lp
        else:
            setattr(ex, f"ref_{what}", lp)


def make_batches(examples: list, batch_size: int) -> list:
    """Global batches of BATCH_SIZE example indices, grouped by token length.

    Examples sorted by length, then cut into consecutive groups: a batch holds examples of
    similar length, so padding stays small. A remainder smaller than a batch is dropped
    (as mlx-lm does), so every rank always gets an equal share. (mlx-lm 0.32's own sorting is
    broken, issue #596, so none of its batching is reused.)
    """
    if len(examples) < batch_size:
        raise D2OError(
            f"--batch-size {batch_size} is larger than the {len(examples)} usable prompts "
            "in the cache"
        )
    order = sorted(range(len(examples)), key=lambda i: (examples[i].length(), i))
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


def batch_at(batches: list, it: int, seed: int) -> list:
    """The batch of iteration IT (0-based): epoch e visits all batches in an order drawn from
    seed + e. A pure function of (it, seed): resuming at step s needs no saved iterator, only s.
    """
    epoch, pos = divmod(it, len(batches))
    order = np.random.default_rng(seed + epoch).permutation(len(batches))
    return batches[order[pos]]


@dataclass
class Batch:
    """One micro-batch: its prompts and the sequences a loss's layout names, as (prompt index,
    response tokens) in layout order (`losses.Loss.layout`: for the samples B*K rows,
    prompt-major; for the negative and for `chosen` B rows each), and the reference log-probs
    (one array per kind of row, [B, K] or [B])."""

    prompts: list
    responses: list
    group: list
    refs: tuple
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.responses)

    def counts(self) -> mx.array:
        return mx.array([len(r) for r in self.responses], dtype=mx.int32)

    def inputs(self, shared: bool, index: Optional[list] = None) -> dict:
        """The arrays of one forward pass over the sequences INDEX (default: all, in layout
        order): SHARED, each prompt once (`shared_prompt.pack`, only the prompts INDEX answers);
        else the full prompt + response sequences (`logprobs.sequence_logps`'s arguments)."""
        index = list(range(len(self))) if index is None else index
        # row_ids/prompt_ids: each row's place in the whole batch, where dropout masks are
        # drawn (`dropout.place`), so a chunk draws what the unchunked step would.
        row_ids = mx.array(index, dtype=mx.int32)
        if shared:
            slot = {g: n for n, g in enumerate(sorted({self.group[i] for i in index}))}
            arrays = pack(
                [self.prompts[g] for g in slot],
                [self.responses[i] for i in index],
                [slot[self.group[i]] for i in index],
                self.pad_id,
            )
            return {
                **arrays,
                "prompt_ids": mx.array(list(slot), dtype=mx.int32),
                "row_ids": row_ids,
            }
        seqs = [self.prompts[self.group[i]] + self.responses[i] for i in index]
        tokens, lengths = pad(seqs, self.pad_id)
        plens = [len(self.prompts[self.group[i]]) for i in index]
        return {
            "tokens": tokens,
            "prompt_lengths": mx.array(plens, dtype=mx.int32),
            "lengths": lengths,
            "row_ids": row_ids,
        }

    def chunks(self, size: int) -> list:
        """The sequence indices in chunks of at most SIZE, prompt by prompt, so that a chunk
        spans as few prompts as it can (each chunk runs its prompts again)."""
        order = sorted(range(len(self)), key=lambda i: (self.group[i], i))
        return [order[i : i + size] for i in range(0, len(order), size)]


def collate(examples: list, rows: tuple, pad_id: int) -> tuple[Batch, int]:
    """The `Batch` of EXAMPLES for a loss whose row layout is ROWS (a loss's `layout()`, in
    `losses.ROWS` order), and its number of real tokens (prompt + response of every sequence,
    as if each ran whole: the count `trained_tokens` has always reported)."""
    responses, group, refs = [], [], []
    for row in rows:
        for b, e in enumerate(examples):
            responses += e.responses(row)
            group += [b] * len(e.responses(row))
        refs.append(mx.array([e.ref(row) for e in examples], dtype=mx.float32))
    prompts = [e.prompt for e in examples]
    ntoks = sum(len(prompts[g]) + len(r) for g, r in zip(group, responses))
    return Batch(prompts, responses, group, tuple(refs), pad_id), ntoks
