"""An empty response scores 0 in every scoring path (issue 17, defect 4).

`score_after_prompts` right-padded its targets with token 0 and counted the one input of an
empty response (the prompt's last token), so an empty response scored log π(token 0 | prompt),
-6.10 on the tiny model, where training's forward gives 0.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_d2o.logprobs import score
from mlx_d2o.models import load
from mlx_d2o.sample.scoring import score_after_prompts, score_like_training


def plain_logp(model, prompt, response) -> float:
    """log π(response | prompt): one mlx-lm forward of the whole sequence, written here."""
    if not response:
        return 0.0
    tokens = mx.array([prompt + response])
    logits = model(tokens[:, :-1]).astype(mx.float32)[0]
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    at = np.arange(len(prompt) - 1, len(prompt) + len(response) - 1)
    return float(np.array(logp)[at, response].sum())


@pytest.mark.parametrize("batch_size", [1, 4])
def test_empty_response_scores_zero_everywhere(tiny_model, batch_size):
    model, _ = load(str(tiny_model))
    rng = np.random.default_rng(0)
    prompts = [list(map(int, rng.integers(3, 250, n))) for n in (6, 11)]
    responses = [[], list(map(int, rng.integers(3, 250, 5))), [], [7]]
    pairs = [(i % 2, r) for i, r in enumerate(responses)]
    want = [plain_logp(model, prompts[g], r) for g, r in pairs]
    assert want[0] == want[2] == 0.0 and want[1] < -1
    paths = {
        "score_after_prompts": score_after_prompts(model, prompts, pairs, batch_size),
        "score_like_training": score_like_training(model, prompts, pairs, batch_size),
        "logprobs.score": score(model, [(prompts[g], r) for g, r in pairs], batch_size),
    }
    for name, (logps, counts) in paths.items():
        assert counts == [len(r) for r in responses], name
        np.testing.assert_allclose(logps, want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_a_batch_of_empty_responses_only(tiny_model):
    model, _ = load(str(tiny_model))
    prompts = [[5, 6, 7], [8, 9]]
    pairs = [(0, []), (1, [])]
    for fn in (score_after_prompts, score_like_training):
        assert fn(model, prompts, pairs, 4) == ([0.0, 0.0], [0, 0]), fn.__name__
