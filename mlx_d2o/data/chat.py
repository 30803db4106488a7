"""Chat rendering: the prompt as the model sees it, and a response's tokens after it."""

from __future__ import annotations

from typing import Optional

from .records import Record


def with_system(messages: list, system_prompt: Optional[str]) -> list:
    """Put SYSTEM_PROMPT first (replacing any system turn the record has)."""
    if not system_prompt:
        return messages
    return [{"role": "system", "content": system_prompt}] + [
        m for m in messages if m["role"] != "system"
    ]


def prompt_tokens(tokenizer, messages: list) -> list[int]:
    """The chat template with add_generation_prompt=True: what the model sees before it answers."""
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))


def end_of_turn_ids(tokenizer) -> set:
    ids = set(getattr(tokenizer, "eos_token_ids", None) or [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def end_of_turn_id(tokenizer) -> Optional[int]:
    """The token the chat template ends an assistant turn with.

    Found by rendering a probe conversation: the first end-of-turn id after the part it shares
    with the prompt. Not `min(eos ids)`: Llama 3 lists `<|end_of_text|>` (128001) before
    `<|eot_id|>` (128009), and its template ends a turn with the latter. Without one in the
    probe: the tokenizer's eos token, else the smallest end-of-turn id.
    """
    eot = end_of_turn_ids(tokenizer)
    msgs = [{"role": "user", "content": "Hi"}]
    prompt = prompt_tokens(tokenizer, msgs)
    full = list(
        tokenizer.apply_chat_template(
            msgs + [{"role": "assistant", "content": "Hello"}], tokenize=True
        )
    )
    shared = next((i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), len(prompt))
    found = next((t for t in full[shared:] if t in eot), None)
    if found is not None:
        return found
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    return min(eot) if eot else None


def response_tokens(
    tokenizer, messages: list, response: str, prompt: Optional[list] = None
) -> list[int]:
    """Tokens of RESPONSE as the template writes it after the prompt, through its end-of-turn token.

    Rendering the whole conversation and cutting at the prompt keeps whatever the template adds
    (e.g. ChatML's `<|im_end|>`) exactly as the model was trained to see it. What the template
    writes after the end-of-turn token (a newline) belongs to the next turn and is dropped.
    """
    prompt = prompt_tokens(tokenizer, messages) if prompt is None else prompt
    full = list(
        tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": response}], tokenize=True
        )
    )
    eot = end_of_turn_ids(tokenizer)
    if full[: len(prompt)] != prompt:
        # Templates that rewrite earlier turns (e.g. strip reasoning) break the prefix property;
        # fall back to the response's own tokens followed by end-of-turn.
        ids = tokenizer.encode(response, add_special_tokens=False)
        end = end_of_turn_id(tokenizer)
        return ids + ([end] if end is not None else [])
    resp = full[len(prompt) :]
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
