"""Tests for mlx_d2o.losses against independent float64 NumPy formulas."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_d2o.errors import D2OError
from mlx_d2o.losses import (
    LOSSES,
    Loss,
    cli_help,
    d2o_instance_loss,
    d2o_loss,
    dpo_loss,
    ga_loss,
    get,
    npo_loss,
)

B, K = 4, 3
SEEDS = [0, 1, 2, 3]


# ---------------------------------------------------------------- references
def np_neg_log_sigmoid(x):
    # -log sigmoid(x) = log(1 + exp(-x)), stable for any magnitude.
    return np.logaddexp(0.0, -x)


def np_d2o(ps, pn, rs, rn, beta, alpha):
    z = beta * (ps - rs).mean(axis=1) - alpha * (pn - rn)
    return np_neg_log_sigmoid(z).mean()


def np_d2o_instance(ps, pn, rs, rn, beta, alpha):
    z = beta * (ps - rs) - alpha * (pn - rn)[:, None]
    return np_neg_log_sigmoid(z).mean()


def np_dpo(pc, pr, rc, rr, beta):
    return np_neg_log_sigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def np_npo(pn, rn, beta):
    return (2.0 / beta * np_neg_log_sigmoid(-beta * (pn - rn))).mean()


def np_ga(pn, tokens):
    return (pn / tokens).mean()


def random_logps(seed, scale=30.0):
    rng = np.random.default_rng(seed)
    # Summed log-probs are negative; the reference is near the policy.
    ps = -rng.uniform(1, scale, size=(B, K))
    pn = -rng.uniform(1, scale, size=(B,))
    rs = ps + rng.normal(0, 5, size=(B, K))
    rn = pn + rng.normal(0, 5, size=(B,))
    return ps, pn, rs, rn


def to_mx(*arrays):
    return [mx.array(a.astype(np.float32)) for a in arrays]


def f32(*arrays):
    # The reference sees exactly the float32 values MLX sees.
    return [a.astype(np.float32).astype(np.float64) for a in arrays]


def fd_grad(f, x, eps=1e-4):
    """Central finite differences of scalar f at float64 array x."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


# -------------------------------------------------------------------- values
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta,alpha", [(0.1, 0.1), (0.5, 0.05), (1.0, 2.0)])
def test_d2o_and_instance_match_numpy(seed, beta, alpha):
    ps, pn, rs, rn = f32(*random_logps(seed))
    for fn, ref in [(d2o_loss, np_d2o), (d2o_instance_loss, np_d2o_instance)]:
        loss, _ = fn(*to_mx(ps, pn, rs, rn), beta=beta, alpha=alpha)
        assert loss.shape == ()
        np.testing.assert_allclose(
            loss.item(), ref(ps, pn, rs, rn, beta, alpha), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_dpo_npo_ga_match_numpy(seed, beta):
    rng = np.random.default_rng(100 + seed)
    pc, pr, rc, rr = f32(*(-rng.uniform(1, 40, size=(4, B))))
    loss, _ = dpo_loss(*to_mx(pc, pr, rc, rr), beta=beta)
    np.testing.assert_allclose(loss.item(), np_dpo(pc, pr, rc, rr, beta), rtol=1e-5)

    loss, _ = npo_loss(*to_mx(pr, rr), beta=beta)
    np.testing.assert_allclose(loss.item(), np_npo(pr, rr, beta), rtol=1e-5)

    tokens = rng.integers(1, 50, size=B)
    loss, _ = ga_loss(mx.array(pr.astype(np.float32)), mx.array(tokens))
    np.testing.assert_allclose(loss.item(), np_ga(pr, tokens), rtol=1e-5)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_extreme_values_are_finite_and_exact(sign):
    # |margin| up to 400 with beta=alpha=1: log(sigmoid(x)) would give -inf.
    rng = np.random.default_rng(7)
    ps = sign * rng.choice([200.0, 150.0], size=(B, K))
    pn = -sign * np.full(B, 200.0)
    rs = np.zeros((B, K))
    rn = np.zeros(B)
    args = to_mx(ps, pn, rs, rn)
    cases = [
        (d2o_loss(*args, beta=1.0, alpha=1.0), np_d2o(ps, pn, rs, rn, 1.0, 1.0)),
        (
            d2o_instance_loss(*args, beta=1.0, alpha=1.0),
            np_d2o_instance(ps, pn, rs, rn, 1.0, 1.0),
        ),
        (
            dpo_loss(*to_mx(ps[:, 0], pn, rs[:, 0], rn), beta=1.0),
            np_dpo(ps[:, 0], pn, rs[:, 0], rn, 1.0),
        ),
        (npo_loss(*to_mx(pn, rn), beta=1.0), np_npo(pn, rn, 1.0)),
    ]
    for (loss, _), expected in cases:
        assert np.isfinite(loss.item())
        np.testing.assert_allclose(loss.item(), expected, rtol=1e-5, atol=1e-6)
    if sign < 0:  # the losing side: MLX's loss ~ |margin| (≥ 350 here), not inf or clipped
        for (loss, _), _ in cases[:3]:
            assert loss.item() > 300

    grad = mx.grad(lambda p, n: d2o_loss(p, n, args[2], args[3], 1.0, 1.0)[0], argnums=(0, 1))(
        args[0], args[1]
    )
    for g in grad:
        assert np.all(np.isfinite(np.array(g)))


# ----------------------------------------------------------------- gradients
@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("beta,alpha", [(0.1, 0.1), (0.3, 1.0)])
def test_d2o_gradients_match_finite_differences(seed, beta, alpha):
    ps, pn, rs, rn = f32(*random_logps(seed, scale=10.0))
    for fn, ref in [(d2o_loss, np_d2o), (d2o_instance_loss, np_d2o_instance)]:
        gs, gn = mx.grad(
            lambda a, b, fn=fn: fn(a, b, *to_mx(rs, rn), beta, alpha)[0], argnums=(0, 1)
        )(*to_mx(ps, pn))
        fd_s = fd_grad(lambda x, ref=ref: ref(x, pn, rs, rn, beta, alpha), ps)
        fd_n = fd_grad(lambda x, ref=ref: ref(ps, x, rs, rn, beta, alpha), pn)
        np.testing.assert_allclose(np.array(gs), fd_s, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(np.array(gn), fd_n, rtol=1e-4, atol=1e-7)
        # Direction: descent raises the samples' likelihood, lowers the negative's.
        assert np.all(np.array(gs) < 0) and np.all(np.array(gn) > 0)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_baseline_gradients_match_finite_differences(seed):
    rng = np.random.default_rng(200 + seed)
    pc, pr, rc, rr = f32(*(-rng.uniform(1, 20, size=(4, B))))
    beta = 0.2
    gc, gr = mx.grad(lambda a, b: dpo_loss(a, b, *to_mx(rc, rr), beta)[0], argnums=(0, 1))(
        *to_mx(pc, pr)
    )
    np.testing.assert_allclose(
        np.array(gc), fd_grad(lambda x: np_dpo(x, pr, rc, rr, beta), pc), rtol=1e-4
    )
    np.testing.assert_allclose(
        np.array(gr), fd_grad(lambda x: np_dpo(pc, x, rc, rr, beta), pr), rtol=1e-4
    )

    g = mx.grad(lambda a: npo_loss(a, mx.array(rr.astype(np.float32)), beta)[0])(
        mx.array(pr.astype(np.float32))
    )
    np.testing.assert_allclose(np.array(g), fd_grad(lambda x: np_npo(x, rr, beta), pr), rtol=1e-4)

    tokens = rng.integers(1, 30, size=B)
    g = mx.grad(lambda a: ga_loss(a, mx.array(tokens))[0])(mx.array(pr.astype(np.float32)))
    np.testing.assert_allclose(np.array(g), fd_grad(lambda x: np_ga(x, tokens), pr), rtol=1e-4)


def test_npo_gradient_tends_to_gradient_ascent_as_beta_vanishes():
    # NPO's 2/beta scaling: d/dp = 2*sigmoid(beta*(p-ref))/B -> 1/B at p = ref.
    pn = mx.array([-10.0, -20.0, -5.0, -30.0])
    g = mx.grad(lambda a: npo_loss(a, pn, beta=1e-4)[0])(pn)
    np.testing.assert_allclose(np.array(g), np.full(B, 1.0 / B), rtol=1e-4)


def test_metrics_carry_no_gradient():
    args = to_mx(*random_logps(0))
    g = mx.grad(lambda a: d2o_loss(a, *args[1:])[1]["rewards/margin"])(args[0])
    assert np.all(np.array(g) == 0)


# ------------------------------------------------------------ relations
@pytest.mark.parametrize("seed", SEEDS)
def test_d2o_with_one_sample_is_dpo(seed):
    ps, pn, rs, rn = random_logps(seed)
    ps, rs = ps[:, :1], rs[:, :1]
    beta = 0.25
    d2o, m_d2o = d2o_loss(*to_mx(ps, pn, rs, rn), beta=beta, alpha=beta)
    dpo, m_dpo = dpo_loss(*to_mx(ps[:, 0], pn, rs[:, 0], rn), beta=beta)
    np.testing.assert_allclose(d2o.item(), dpo.item(), rtol=1e-6)
    for name in ["rewards/negative", "rewards/margin", "accuracy"]:
        np.testing.assert_allclose(m_d2o[name].item(), m_dpo[name].item(), rtol=1e-6)
    np.testing.assert_allclose(
        m_d2o["rewards/samples"].item(), m_dpo["rewards/chosen"].item(), rtol=1e-6
    )


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("beta,alpha", [(0.1, 0.1), (0.5, 0.1), (0.1, 1.0)])
def test_jensen_d2o_below_instance(seed, beta, alpha):
    ps, pn, rs, rn = random_logps(seed, scale=60.0)
    d2o, _ = d2o_loss(*to_mx(ps, pn, rs, rn), beta=beta, alpha=alpha)
    inst, _ = d2o_instance_loss(*to_mx(ps, pn, rs, rn), beta=beta, alpha=alpha)
    assert d2o.item() <= inst.item() + 1e-6
    # Samples differ across k, so the bound is strict.
    assert d2o.item() < inst.item()


def test_jensen_is_tight_when_samples_agree():
    ps, pn, rs, rn = random_logps(3)
    ps = np.repeat(ps[:, :1], K, axis=1)
    rs = np.repeat(rs[:, :1], K, axis=1)
    d2o, _ = d2o_loss(*to_mx(ps, pn, rs, rn), beta=0.7, alpha=0.2)
    inst, _ = d2o_instance_loss(*to_mx(ps, pn, rs, rn), beta=0.7, alpha=0.2)
    np.testing.assert_allclose(d2o.item(), inst.item(), rtol=1e-6)


# ------------------------------------------------------------------ metrics
def test_metrics_on_constructed_example():
    # alpha != beta and nonzero references: a metric that swapped alpha and beta, or read the
    # policy's log-probs where the reward (log-ratio) belongs, gives another number.
    alpha, beta = 0.3, 0.7
    ps = np.array(
        [
            [3.0, -1.0, -1.0],  # z = 0.7/3 - 0 > 0; pairs: 3 only
            [2.0, 2.0, 2.0],  # z = 1.4 - 0.3 > 0; pairs 3/3
            [-4.0, 1.0, 0.0],  # z = -0.7 < 0; pairs: 1 only (0.7 > 0)
            [1.0, 1.0, 1.0],  # z = 0.7 - 1.5 < 0; pairs none
        ]
    )
    pn = np.array([0.0, 1.0, 0.0, 5.0])
    rs = np.full_like(ps, -2.0)
    rn = np.full_like(pn, -1.0)
    ps, rs = ps + rs, rs  # log-ratios as above, log-probs shifted by the reference
    pn, rn = pn + rn, rn
    args = to_mx(ps, pn, rs, rn)
    reward_s, reward_n = beta * (ps - rs), alpha * (pn - rn)
    z = reward_s.mean(axis=1) - reward_n

    _, m = d2o_loss(*args, beta=beta, alpha=alpha)
    assert (z > 0).tolist() == [True, True, False, False]
    assert m["accuracy"].item() == pytest.approx(2 / 4)
    assert m["rewards/samples"].item() == pytest.approx(reward_s.mean())
    assert m["rewards/negative"].item() == pytest.approx(reward_n.mean())
    assert m["rewards/margin"].item() == pytest.approx(z.mean())
    assert m["logps/samples"].item() == pytest.approx(ps.mean())
    assert m["logps/negative"].item() == pytest.approx(pn.mean())

    _, m = d2o_instance_loss(*args, beta=beta, alpha=alpha)
    pairs = reward_s - reward_n[:, None]
    assert (pairs > 0).sum() == 1 + 3 + 1 + 0
    assert m["accuracy"].item() == pytest.approx(5 / 12)
    assert m["rewards/margin"].item() == pytest.approx(pairs.mean())
    assert m["rewards/samples"].item() == pytest.approx(reward_s.mean())
    assert m["rewards/negative"].item() == pytest.approx(reward_n.mean())

    _, m = dpo_loss(*to_mx(ps[:, 0], pn, rs[:, 0], rn), beta=beta)
    margin = beta * ((ps[:, 0] - rs[:, 0]) - (pn - rn))
    assert m["accuracy"].item() == pytest.approx((margin > 0).mean())  # 3>0, 2>1, -4<0, 1<5
    assert m["rewards/negative"].item() == m["rewards/rejected"].item()
    assert m["rewards/chosen"].item() == pytest.approx(beta * (ps[:, 0] - rs[:, 0]).mean())
    assert m["rewards/rejected"].item() == pytest.approx(beta * (pn - rn).mean())
    assert m["logps/rejected"].item() == pytest.approx(pn.mean())
    assert m["logps/chosen"].item() == pytest.approx(ps[:, 0].mean())

    for name, value in m.items():
        assert value.shape == (), name


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta,alpha", [(0.1, 0.5), (0.7, 0.2)])
def test_accuracy_is_the_share_of_positive_margins(seed, beta, alpha):
    """accuracy = share of z > 0 (per prompt for d2o, per (prompt, sample) pair for
    d2o-instance), from the NumPy margins; random data with alpha != beta puts it strictly
    inside (0, 1) for some seeds, so a constant or a swapped alpha/beta shows."""
    ps, pn, rs, rn = f32(*random_logps(seed))
    rs = rs + 2.0  # margins of both signs
    z = beta * (ps - rs).mean(axis=1) - alpha * (pn - rn)
    zk = beta * (ps - rs) - alpha * (pn - rn)[:, None]
    args = to_mx(ps, pn, rs, rn)
    acc = d2o_loss(*args, beta=beta, alpha=alpha)[1]["accuracy"].item()
    acc_k = d2o_instance_loss(*args, beta=beta, alpha=alpha)[1]["accuracy"].item()
    assert acc == pytest.approx((z > 0).mean())
    assert acc_k == pytest.approx((zk > 0).mean())
    swapped = alpha * (ps - rs).mean(axis=1) - beta * (pn - rn)
    margin = d2o_loss(*args, beta=beta, alpha=alpha)[1]["rewards/margin"].item()
    assert margin == pytest.approx(z.mean(), rel=1e-5)
    assert abs(margin - swapped.mean()) > 1e-3


def test_accuracy_is_strictly_inside_for_some_seed():
    # the parametrized test above would pass for accuracies stuck at 0 or 1 only if NumPy's
    # were too: make sure the data give fractions
    fractions = []
    for seed in SEEDS:
        ps, pn, rs, rn = f32(*random_logps(seed))
        z = 0.1 * (ps - rs - 2.0).mean(axis=1) - 0.5 * (pn - rn)
        fractions.append((z > 0).mean())
    assert any(0 < f < 1 for f in fractions), fractions


def test_npo_and_ga_metrics():
    pn = np.array([-10.0, -20.0, -6.0, -40.0])
    rn = np.array([-12.0, -20.0, -3.0, -40.0])
    tokens = np.array([5, 10, 3, 0])  # an empty negative must not give NaN
    _, m = npo_loss(*to_mx(pn, rn), beta=0.5)
    assert m["rewards/negative"].item() == pytest.approx((0.5 * (pn - rn)).mean())
    assert m["logps/negative"].item() == pytest.approx(pn.mean())
    loss, m = ga_loss(mx.array(pn.astype(np.float32)), mx.array(tokens))
    per_token = pn / np.maximum(tokens, 1)
    assert loss.item() == pytest.approx(per_token.mean())
    assert m["nll/negative"].item() == pytest.approx(-per_token.mean())
    assert m["logps/negative"].item() == pytest.approx(pn.mean())


# ------------------------------------------------------- compile / registry
def test_d2o_under_compile_and_value_and_grad():
    args = to_mx(*random_logps(5))

    def objective(ps, pn, rs, rn):
        return d2o_loss(ps, pn, rs, rn, beta=0.1, alpha=0.2)

    eager_loss, eager_metrics = objective(*args)
    compiled_loss, compiled_metrics = mx.compile(objective)(*args)
    np.testing.assert_allclose(compiled_loss.item(), eager_loss.item(), rtol=1e-6)
    assert compiled_metrics.keys() == eager_metrics.keys()
    for name in eager_metrics:
        np.testing.assert_allclose(
            compiled_metrics[name].item(), eager_metrics[name].item(), rtol=1e-6
        )

    vg = mx.value_and_grad(objective, argnums=(0, 1))
    (loss, _), grads = mx.compile(vg)(*args)
    (_, _), eager_grads = vg(*args)
    np.testing.assert_allclose(loss.item(), eager_loss.item(), rtol=1e-6)
    for g, e in zip(grads, eager_grads):
        np.testing.assert_allclose(np.array(g), np.array(e), rtol=1e-6)

    # A second call with new values must not reuse a traced constant.
    args2 = to_mx(*random_logps(6))
    np.testing.assert_allclose(
        mx.compile(objective)(*args2)[0].item(), objective(*args2)[0].item(), rtol=1e-6
    )


def test_registry():
    assert {name: loss.fn for name, loss in LOSSES.items()} == {
        "d2o": d2o_loss,
        "d2o-instance": d2o_instance_loss,
        "dpo": dpo_loss,
        "npo": npo_loss,
        "ga": ga_loss,
    }
    for name, loss in LOSSES.items():
        assert loss.fn.__doc__ and "arXiv" in loss.fn.__doc__, name
        assert loss.name == name and loss.help, name


def test_declaration_derives_layout_metrics_and_help():
    assert {n: loss.layout() for n, loss in LOSSES.items()} == {
        "d2o": ("samples", "negative"),
        "d2o-instance": ("samples", "negative"),
        "dpo": ("negative", "chosen"),
        "npo": ("negative",),
        "ga": ("negative",),
    }
    assert LOSSES["dpo"].metric_names() == sorted(
        ["rewards/chosen", "rewards/rejected", "rewards/negative", "rewards/margin", "accuracy"]
        + ["logps/chosen", "logps/rejected"]
    )
    assert LOSSES["ga"].metric_names() == ["logps/negative", "nll/negative"]
    assert all(f"{n}:" in cli_help() for n in LOSSES)
    with pytest.raises(D2OError, match="unknown --loss 'nope'"):
        get("nope")
    with pytest.raises(ValueError, match="rows must come from"):
        Loss("bad", npo_loss, rows=("positive",))


def test_declared_call_matches_the_function():
    ps, pn, rs, rn = to_mx(*random_logps(0))
    arrays = {"policy_samples": ps, "policy_negative": pn, "ref_samples": rs, "ref_negative": rn}
    loss, metrics = LOSSES["d2o"](arrays, alpha=0.2, beta=0.3, unused=1.0)
    want, want_metrics = d2o_loss(ps, pn, rs, rn, beta=0.3, alpha=0.2)
    assert loss.item() == want.item() and metrics.keys() == want_metrics.keys()
    for name, value in want_metrics.items():  # alpha and beta reach the function unswapped
        assert metrics[name].item() == value.item(), name
    # DPO's alias is left out of the call (compile) and put back after it.
    arrays = {"policy_chosen": ps[:, 0], "ref_chosen": rs[:, 0], **arrays}
    _, metrics = LOSSES["dpo"](arrays, alpha=0.2, beta=0.3)
    assert "rewards/negative" not in metrics
    full = LOSSES["dpo"].with_aliases(metrics)
    assert full["rewards/negative"].item() == full["rewards/rejected"].item()
