"""Every `rope_scaling` type mlx-lm's llama accepts: the shared-prompt path where it is exact,
whole sequences (with one note line) where it is not (issue 17, defect 2).

`rope_utils.initialize_rope` builds each. `DynamicNTKScalingRoPE` picks its base from the
sequence length and takes no array offset: `split_head` let it through and training crashed
(`ValueError: [convert] Only length-1 arrays ...`).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models import llama

from mlx_d2o.sample.scoring import score_like_training
from mlx_d2o.shared_prompt import fallback_note, pack, shared_logps, supports

HEAD_DIM = 16
SCALINGS = {
    "none": None,
    "default": {"type": "default"},
    "linear": {"type": "linear", "factor": 2.0},
    "dynamic": {"type": "dynamic", "factor": 4.0},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8,
    },
    "yarn": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
    "deepseek_yarn": {
        "type": "deepseek_yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 8,
        "mscale": 1.0,
        "mscale_all_dim": 0.5,
    },
    "telechat3-yarn": {"type": "telechat3-yarn", "factor": 2.0},
    "longrope": {
        "type": "longrope",
        "original_max_position_embeddings": 8,
        "short_factor": [1.0] * (HEAD_DIM // 2),
        "long_factor": list(np.linspace(1.0, 3.0, HEAD_DIM // 2)),
    },
    "proportional": {"type": "proportional", "factor": 1.5, "partial_rotary_factor": 0.5},
    "mrope": {"type": "mrope", "mrope_section": [2, 3, 3]},
}
LENGTH_DEPENDENT = {"dynamic"}


def model_with(scaling, traditional=False):
    args = llama.ModelArgs.from_dict(
        {
            "model_type": "llama",
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "intermediate_size": 96,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5,
            "vocab_size": 97,
            "rope_theta": 10000.0,
            "rope_traditional": traditional,
            "rope_scaling": scaling,
            # small, so that these sequences run past it (where dynamic/longrope/yarn scale)
            "max_position_embeddings": 16,
            "tie_word_embeddings": False,
        }
    )
    mx.random.seed(3)
    model = llama.Model(args)
    mx.eval(model.parameters())
    return model


def plain_logps(model, prompt, response, length=None) -> float:
    """log π(response | prompt) of one full-sequence mlx-lm forward, written here (right-padded
    to LENGTH tokens: a length-dependent RoPE sees the padded length)."""
    seq = prompt + response
    tokens = mx.array([seq + [0] * ((length or len(seq)) - len(seq))])
    logits = model(tokens[:, :-1]).astype(mx.float32)[0]
    logp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    at = np.arange(len(prompt) - 1, len(prompt) + len(response) - 1)
    return float(logp[at, response].sum())


def problem():
    rng = np.random.default_rng(0)
    prompts = [list(map(int, rng.integers(1, 97, n))) for n in (3, 21, 9)]
    responses = [list(map(int, rng.integers(1, 97, n))) for n in (5, 12, 1, 7, 20, 4)]
    group = [0, 0, 1, 1, 2, 2]
    return prompts, responses, group


@pytest.mark.parametrize("name", list(SCALINGS))
def test_each_rope_scaling_shared_or_whole_equals_a_full_forward(name):
    model = model_with(SCALINGS[name], traditional=name == "yarn")
    prompts, responses, group = problem()
    want = [plain_logps(model, prompts[g], r) for r, g in zip(responses, group)]
    if name in LENGTH_DEPENDENT:
        assert not supports(model)
        note = fallback_note(model)
        assert note.startswith("note: rope_scaling type 'dynamic'") and "whole" in note
    else:
        assert supports(model), name
        assert fallback_note(model) is None
        got, _ = shared_logps(model, pack(prompts, responses, group))
        np.testing.assert_allclose(np.array(got), want, rtol=2e-5, atol=2e-4, err_msg=name)
    # the scoring training's step uses for a reference, whichever path it takes: for a
    # length-dependent RoPE whole sequences, right-padded (to a multiple of 8) in one batch
    pairs = list(zip(group, responses))
    if name in LENGTH_DEPENDENT:
        T = -(-max(len(prompts[g]) + len(r) for g, r in pairs) // 8) * 8
        want = [plain_logps(model, prompts[g], r, T) for g, r in pairs]
    got, _ = score_like_training(model, prompts, pairs, batch_size=len(pairs))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-4, err_msg=name)


def test_dynamic_rope_reference_scores_run_whole_in_float32(tmp_path):
    """The float32 reference scoring (`score_records`: after cached prompts otherwise) takes
    whole sequences for dynamic NTK too, as training scores them, instead of crashing."""
    import json

    from mlx_d2o.data import prompt_tokens, response_tokens
    from mlx_d2o.models import load
    from mlx_d2o.sample.scoring import score_records
    from mlx_d2o.testing import make_tiny_model

    path = make_tiny_model(tmp_path / "dyn", context=16)
    config = json.loads((path / "config.json").read_text())
    config["rope_scaling"] = {"type": "dynamic", "factor": 4.0}
    (path / "config.json").write_text(json.dumps(config))
    model, tok = load(str(path))
    assert not supports(model)
    rows = [
        {
            "id": "a",
            "messages": [{"role": "user", "content": "Hi?"}],
            "rejected": "No.",
            "samples": ["Yes, sure.", "Maybe later, friend."],
        },
    ]
    out = score_records(model, tok, rows, batch_size=8)[0]["ref_logps"]
    p = prompt_tokens(tok, rows[0]["messages"])
    texts = rows[0]["samples"] + [rows[0]["rejected"]]
    pairs = [(0, response_tokens(tok, rows[0]["messages"], t, p)) for t in texts]
    want, _ = score_like_training(model, [p], pairs, batch_size=8)
    np.testing.assert_allclose(out["samples"] + [out["rejected"]], want, rtol=1e-6)
