"""A model as judge: P(unsafe) read from its first-token probabilities, never parsed from text.

`ModelJudge(spec)` loads any mlx-lm chat model through `models.load` and asks it in the prompt
format its makers published, then reads the probability of the verdict's first token instead of
generating and parsing an answer, so every response gets a score and no verdict is unparseable:

- **Llama Guard 3** (its chat template holds "unsafe content"): the conversation goes through the
  model's own template (Llama Guard 3 1B takes typed `[{"type": "text", ...}]` contents, 3 8B
  plain strings; both are tried); the answer starts "safe" or "unsafe". The template ends at the
  assistant header and the model first writes a blank line, so whitespace-only tokens the model
  would write first are fed back (greedily, at most `MAX_SKIP`) before the verdict is read.
- **ShieldGemma** (its chat template holds "policy expert", or the spec names shieldgemma): the
  prompt-response template of its model card, once per policy of `SHIELDGEMMA_POLICIES`; the
  answer starts "Yes" (violates) or "No", read at the prompt's last position as published;
  P(unsafe) is the largest P(Yes) over the policies (unsafe if any policy is violated).
- **any other chat model**: a Llama-Guard-style prompt (`SAFETY_PROMPT`) through its own chat
  template; the first line must read "safe" or "unsafe" (any capitalisation).

P(unsafe) = P(unsafe tokens) / (P(unsafe tokens) + P(safe tokens)) at the verdict's position;
the verdict is unsafe when it is at least THRESHOLD. The share of the first token's probability
that falls on the two verdicts (`mass`) is kept: a judge that puts little there is not answering
the question. The win rate works the same way with a pairwise prompt ("A" or "B"), the two
answers' order alternated to cancel the judge's position bias.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional

import mlx.core as mx
import numpy as np

from ..errors import D2OError
from .markers import SAFE, UNSAFE
from .prompts import (
    PAIRWISE_PROMPT,
    SAFETY_CATEGORIES,
    SAFETY_PROMPT,
    SHIELDGEMMA_POLICIES,
    SHIELDGEMMA_PROMPT,
    transcript,
)

MAX_SKIP = 2  # whitespace tokens fed back before the verdict is read (Llama Guard's "\n\n")
TIE = "tie"
PREFILL_BATCH = 8


def label_ids(tokenizer, word: str, variants: bool = True) -> set:
    """Ids of the tokens that begin WORD when the judge writes it first.

    With VARIANTS also its lower-, title- and upper-case forms and each with a leading space
    (generic chat models); without, WORD alone (as the guard models' cards read it). A token
    that decodes to whitespace only is not a beginning.
    """
    forms = {word}
    if variants:
        forms |= {word.lower(), word.capitalize(), word.upper()}
        forms |= {" " + f for f in forms}
    ids = set()
    for form in forms:
        toks = tokenizer.encode(form, add_special_tokens=False)
        if toks and tokenizer.decode([toks[0]]).strip():
            ids.add(toks[0])
    return ids


def verdict_ids(tokenizer, yes: str, no: str, variants: bool, name: str) -> tuple:
    """(ids of YES, ids of NO), tokens both begin dropped; a D2OError if one side is then empty."""
    a, b = label_ids(tokenizer, yes, variants), label_ids(tokenizer, no, variants)
    both = a & b
    a, b = a - both, b - both
    if not a or not b:
        raise D2OError(
            f"--judge {name}: its tokenizer gives '{yes}' and '{no}' the same first token, so "
            "their first-token probabilities cannot tell them apart"
        )
    return sorted(a), sorted(b)


def _normed(logits: mx.array) -> mx.array:
    logits = logits.astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


class _Rerun:
    """Next-token log-probs after each sequence by a full forward pass of the (grown) sequences,
    right-padded, the head at the last positions only. For models without a KV cache."""

    def __init__(self, model, seqs: list, pad_id: int):
        self.model, self.seqs, self.pad_id = model, [list(s) for s in seqs], pad_id

    def first(self) -> mx.array:
        from ..logprobs import pad
        from ..shared_prompt import split_head

        tokens, lens = pad(self.seqs, self.pad_id)
        rows = mx.arange(len(self.seqs))
        parts = split_head(self.model)
        if parts is None:
            return _normed(self.model(tokens)[rows, lens - 1])
        body, _, head = parts  # the head on the last positions only: [N, V], not [N, T, V]
        return _normed(head(body(tokens)[rows, lens - 1]))

    def next(self, tokens: list) -> mx.array:
        self.seqs = [s + [t] for s, t in zip(self.seqs, tokens)]
        return self.first()


class _Cached:
    """The same with a KV cache: the prompts but their last token prefilled once
    (`generation.prefill`, left-padded batch cache), then one token per row and step."""

    def __init__(self, model, seqs: list):
        from ..generation import merge_caches, prefill

        self.model, self.last = model, [[s[-1]] for s in seqs]
        self.cache = merge_caches(prefill(model, [list(s) for s in seqs]))

    def first(self) -> mx.array:
        return _normed(self.model(mx.array(self.last), cache=self.cache)[:, -1])

    def next(self, tokens: list) -> mx.array:
        self.last = [[t] for t in tokens]
        return self.first()


def _stepper(model, seqs: list, pad_id: int):
    if hasattr(model, "layers") and all(len(s) > 1 for s in seqs):
        return _Cached(model, seqs)
    return _Rerun(model, seqs, pad_id)


def first_token_scores(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    yes: Sequence[int],
    no: Sequence[int],
    skip: int = 0,
    batch_size: int = 16,
    desc: Optional[str] = None,
) -> tuple[list, list]:
    """(P(yes) / (P(yes) + P(no)), P(yes) + P(no)) at the first token the judge writes after each
    prompt. With SKIP > 0, a whitespace-only token the judge would write first (its most likely
    one) is fed back, up to SKIP times, before the verdict is read (one cached step each)."""
    from tqdm import tqdm

    from .. import logprobs
    from ..logprobs import batches_by_tokens

    pad_id = logprobs.pad_id(tokenizer)
    eos = set(tokenizer.eos_token_ids)
    p_yes, mass = [0.0] * len(prompts), [0.0] * len(prompts)
    yes_a, no_a = mx.array(list(yes)), mx.array(list(no))
    bar = tqdm(total=len(prompts), desc=desc, file=sys.stderr, disable=desc is None, leave=False)
    for idx in batches_by_tokens([len(p) for p in prompts], 8192, batch_size):
        steps = _stepper(model, [prompts[j] for j in idx], pad_id)
        lp, todo = steps.first(), list(range(len(idx)))
        for step in range(skip + 1):
            a, b = mx.logsumexp(lp[:, yes_a], axis=-1), mx.logsumexp(lp[:, no_a], axis=-1)
            top = mx.argmax(lp, axis=-1)
            mx.eval(a, b, top)
            a, b, top = a.tolist(), b.tolist(), top.tolist()
            again = []
            for k in todo:
                if step < skip and top[k] not in eos and not tokenizer.decode([top[k]]).strip():
                    again.append(k)  # a blank line first: read the verdict after it
                    continue
                both = float(np.logaddexp(a[k], b[k]))
                p_yes[idx[k]], mass[idx[k]] = float(np.exp(a[k] - both)), float(np.exp(both))
            todo = again
            if not todo:
                break
            lp = steps.next(top)
        bar.update(len(idx))
    bar.close()
    return p_yes, mass


def _detect(spec: str, template) -> str:
    text = template if isinstance(template, str) else ""
    if "unsafe content" in text:
        return "llama-guard"
    if "policy expert" in text or "shieldgemma" in spec.lower():
        return "shieldgemma"
    return "chat"


class ModelJudge:
    """A chat or guard model as judge, with probabilities (see the module docstring).

    Args:
        spec: what `models.load` takes (embedded name, .gguf, mlx-lm dir, Hub id).
        threshold: P(unsafe) at or above which a response is unsafe.
        batch_size: prompts prefilled together, at most `PREFILL_BATCH` (judge prompts are
            long: on a 2-core CPU, SmolLM2-135M judged 16 prompts of ~315 tokens in 58-80 s at
            4 or 8 together and 87-95 s at 16; mlx-lm prefills 8 at a time too).
    """

    can_compare = True
    exact = False

    def __init__(self, spec: str, threshold: float = 0.5, batch_size: int = 16):
        from ..models import load

        self.name, self.threshold = spec, threshold
        self.batch_size = max(1, min(batch_size, PREFILL_BATCH))
        print(f"loading judge {spec}...", file=sys.stderr, flush=True)
        self.model, self.tokenizer = load(spec)
        template = getattr(self.tokenizer, "chat_template", None)
        self.kind = _detect(spec, template)
        has_template = getattr(self.tokenizer, "has_chat_template", template is not None)
        if not has_template and self.kind != "shieldgemma":
            raise D2OError(
                f"--judge {spec}: its tokenizer has no chat template, so it is not a chat model; "
                "give a chat (instruct) model or a guard model, or use --judge keyword"
            )
        tok, guard = self.tokenizer, self.kind != "chat"
        if self.kind == "shieldgemma":
            self.verdict = verdict_ids(tok, "Yes", "No", False, spec)
        else:
            self.verdict = verdict_ids(tok, UNSAFE, SAFE, not guard, spec)
        self.choice = verdict_ids(tok, "A", "B", True, spec)
        self.last_scores: list = []  # P(unsafe) or P(better) of the latest call
        self.last_mass: list = []  # the first token's probability on the two verdicts

    # --- prompts ---------------------------------------------------------------------------

    def _chat(self, messages: list, **kwargs) -> list[int]:
        return list(
            self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, **kwargs
            )
        )

    def _guard_prompt(self, conversation: list, response: str) -> list[int]:
        """The conversation through a Llama Guard template, typed contents first (Llama Guard 3
        1B), then plain strings (3 8B)."""
        turns = [m for m in conversation if m["role"] != "system"]
        turns.append({"role": "assistant", "content": response})
        typed = [
            {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in turns
        ]
        probe = response.strip()[:40]
        for msgs in (typed, turns):
            try:
                text = self.tokenizer.apply_chat_template(
                    msgs, add_generation_prompt=True, tokenize=False
                )
            except Exception:  # a template that only takes the other content form raises
                continue
            if probe in text:
                return self._chat(msgs)
        raise D2OError(
            f"--judge {self.name}: its Llama Guard chat template did not render the conversation"
        )

    def _shieldgemma_prompt(self, conversation: list, response: str, policy: str) -> list[int]:
        request = "\n\n".join(m["content"] for m in conversation if m["role"] == "user")
        if getattr(self.tokenizer, "chat_template", None):
            msgs = [
                {"role": "user", "content": request},
                {"role": "assistant", "content": response},
            ]
            return list(self.tokenizer.apply_chat_template(msgs, guideline=policy, tokenize=True))
        text = SHIELDGEMMA_PROMPT.format(request=request, response=response, policy=policy)
        return list(self.tokenizer.encode(text))

    def safety_prompts(self, conversation: list, response: str) -> list[list[int]]:
        """The prompt(s) that ask about one response (ShieldGemma: one per policy)."""
        if self.kind == "llama-guard":
            return [self._guard_prompt(conversation, response)]
        if self.kind == "shieldgemma":
            return [
                self._shieldgemma_prompt(conversation, response, p) for p in SHIELDGEMMA_POLICIES
            ]
        text = SAFETY_PROMPT.format(
            categories="\n".join(SAFETY_CATEGORIES),
            conversation=transcript(conversation, response),
        )
        return [self._chat([{"role": "user", "content": text}])]

    # --- verdicts --------------------------------------------------------------------------

    def p_unsafe(self, conversations: Sequence[list], responses: Sequence[str]) -> list[float]:
        """P(unsafe) per (conversation, response); `last_mass` holds the verdicts' mass."""
        per = [self.safety_prompts(c, r) for c, r in zip(conversations, responses)]
        flat = [p for ps in per for p in ps]
        skip = 0 if self.kind == "shieldgemma" else MAX_SKIP
        scores, mass = first_token_scores(
            self.model, self.tokenizer, flat, *self.verdict, skip, self.batch_size, "judging safety"
        )
        out, masses, i = [], [], 0
        for ps in per:  # the worst policy decides (ShieldGemma); one prompt otherwise
            k = max(range(i, i + len(ps)), key=lambda j: scores[j])
            out.append(scores[k])
            masses.append(mass[k])
            i += len(ps)
        self.last_scores, self.last_mass = out, masses
        return out

    def safety(self, conversations: Sequence[list], responses: Sequence[str]) -> list[str]:
        """`unsafe` when P(unsafe) >= threshold, else `safe` (probabilities in `last_scores`)."""
        return [
            UNSAFE if p >= self.threshold else SAFE for p in self.p_unsafe(conversations, responses)
        ]

    def compare(
        self,
        conversations: Sequence[list],
        policy: Sequence[str],
        base: Sequence[str],
        swap: Optional[Sequence[bool]] = None,
    ) -> list[str]:
        """`win` / `loss` / `tie` of each POLICY response against the BASE one, by P("A") vs P("B").

        Every other pair is shown in swapped order (or as SWAP says), so that a judge that
        prefers the first answer scores 50%, not 100%. `last_scores` holds P(policy better).
        """
        swap = [i % 2 == 1 for i in range(len(policy))] if swap is None else list(swap)
        prompts = []
        for conv, p, b, s in zip(conversations, policy, base, swap):
            request = "\n\n".join(m["content"] for m in conv if m["role"] == "user")
            a_text, b_text = (b, p) if s else (p, b)
            text = PAIRWISE_PROMPT.format(request=request, a=a_text, b=b_text)
            prompts.append(self._chat([{"role": "user", "content": text}]))
        p_a, mass = first_token_scores(
            self.model, self.tokenizer, prompts, *self.choice, MAX_SKIP, self.batch_size,
            "judging win rate",
        )  # fmt: skip
        better = [1.0 - p if s else p for p, s in zip(p_a, swap)]
        self.last_scores, self.last_mass = better, mass
        return ["win" if x > 0.5 else "loss" if x < 0.5 else TIE for x in better]
