"""Loss combiners: the registry, their weights, and MELTR's bi-level meta step on a tiny backbone."""
import importlib
import math

import pytest
import torch

from meltr.combiners import REGISTRY, LossCombiner, MeltrConfig, build_combiner
from meltr.data.batching import Batcher, tokenize
from meltr.errors import MeltrError
from meltr.meta.net import NET_PRESETS, MeltrNetPreset, MetaLossTransformer
from meltr.models.presets import ModelPreset
from meltr.models.tokenizer import load_tokenizer
from meltr.models.losses import LOSS_NAMES
from meltr.models.univl import VideoLanguageModel

meltr_module = importlib.import_module("meltr.combiners.meltr")

B, T, D, MAX_WORDS = 4, 4, 12, 8
CAPTIONS = ["a man is cooking", "a dog runs in the park", "two people talk", "a car drives fast on a road"]
ALL = list(LOSS_NAMES)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def tiny_net(monkeypatch):
    """A tiny Meta Loss Transformer preset, selectable as meltr.net = "test"."""
    monkeypatch.setitem(NET_PRESETS, "test", MeltrNetPreset(f_dim=8, h1=4, h2=8, heads=2))


def make_combiner(method, names=ALL, primary="align", **meltr):
    """MELTR on the official computation (double_backward on replayed batches) unless a test says otherwise,
    stepped on the k, 2k, ... schedule (`replay_schedule: ours`; the official one has a test of its own)."""
    torch.manual_seed(0)  # the MELTR net's initialisation
    official = {"estimator": "double_backward", "meta_batches": "replay", "replay_schedule": "ours"}
    cfg = {"net": "test", **official, **meltr} if method == "meltr" else None
    return build_combiner(method, list(names), primary, cfg)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def batches(tok):
    tz = tokenize(tok, CAPTIONS, MAX_WORDS)
    batcher = Batcher(tok)
    out = []
    for seed in range(6):
        video = torch.randn(B, T, D, generator=torch.Generator().manual_seed(100 + seed))
        out.append(batcher.make(video, tz, torch.Generator().manual_seed(seed)))
    return out


def make_model(tok, dropout=0.1):
    torch.manual_seed(1)
    preset = ModelPreset("test", hidden=16, heads=2, text_layers=1, video_layers=1, cross_layers=1,
                         decoder_layers=1, intermediate=32, dropout=dropout)
    return VideoLanguageModel(preset, D, len(tok), max_words=MAX_WORDS, max_frames=T)


@pytest.fixture
def model(tok):
    return make_model(tok)


def snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def grad_snapshot(module):
    return {n: None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()}


def assert_same(a, b, ulps: int = 0):
    """Equal state dicts: bitwise, or within `ulps` float32 roundings (an in-place perturbation undone)."""
    assert a.keys() == b.keys()
    for n in a:
        if a[n] is None or b[n] is None:
            assert a[n] is None and b[n] is None, n
        elif ulps:
            torch.testing.assert_close(a[n], b[n], rtol=ulps * torch.finfo(torch.float32).eps, atol=1e-12, msg=n)
        else:
            assert torch.equal(a[n], b[n]), n


# ------------------------------------------------------------------------------------------ registry
def test_registry_names():
    assert set(REGISTRY) == {"finetune", "multitask", "uncertainty", "famo", "meltr"}
    for name, cls in REGISTRY.items():
        assert issubclass(cls, LossCombiner) and cls.name == name


@pytest.mark.parametrize("method", sorted(REGISTRY))
@pytest.mark.parametrize("primary", ["align", "decoder", "cmfm"])
def test_loss_names_start_with_primary(method, primary):
    comb = make_combiner(method, ALL, primary)
    assert isinstance(comb, REGISTRY[method])
    assert comb.primary == primary
    assert comb.loss_names[0] == primary
    if method == "finetune":
        assert comb.loss_names == (primary,)
    else:
        assert sorted(comb.loss_names) == sorted(ALL)
        assert list(comb.loss_names[1:]) == [n for n in ALL if n != primary]  # others keep their order


@pytest.mark.parametrize("method", ["multitask", "meltr"])  # Finetune ignores loss_names (see report)
def test_primary_must_be_a_loss(method):
    with pytest.raises(ValueError):
        make_combiner(method, ["joint", "cmlm"], "align")


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_forward_is_finite_scalar(method):
    comb = make_combiner(method)
    losses = torch.tensor([2.0, 0.5, 9.0, 3.0, 1.5, 0.7, 4.0, 1.1])[: len(comb.loss_names)].requires_grad_(True)
    out = comb(losses)
    assert out.shape == ()
    assert torch.isfinite(out)
    out.backward()
    assert losses.grad is not None and torch.isfinite(losses.grad).all()


def test_finetune_and_multitask_values():
    losses = torch.tensor([2.0, 0.5, 9.0, 3.0, 1.5, 0.7, 4.0, 1.1])
    assert make_combiner("finetune")(losses[:1]).item() == 2.0
    assert make_combiner("multitask")(losses).item() == pytest.approx(21.8)


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_weights(method):
    comb = make_combiner(method)
    m = len(comb.loss_names)
    losses = torch.tensor([2.0, 0.5, 9.0, 3.0, 1.5, 0.7, 4.0, 1.1])[:m]
    with torch.no_grad():  # weights() is used for logging, often under no_grad
        w = comb.weights(losses)
    assert w.shape == (m,)
    assert not w.requires_grad
    if method == "finetune":
        assert torch.equal(w, torch.ones(1))
    elif method == "multitask":
        assert torch.equal(w, torch.ones(m))
    elif method == "uncertainty":  # exp(-s) per loss, whatever the loss values: equal until s moves
        assert torch.equal(w, torch.exp(-comb.log_var.detach()))
    else:
        x = losses.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(comb(x), x)
        torch.testing.assert_close(w, ref)
        assert not torch.allclose(w, torch.full_like(w, w[0].item()))  # a learned, loss-dependent weighting
        assert all(p.grad is None for p in comb.parameters())  # logging leaves no gradient on phi


def test_meltr_net_is_the_configured_preset():
    comb = make_combiner("meltr")
    assert isinstance(comb.net, MetaLossTransformer)
    assert comb.net.num_losses == len(ALL)
    assert comb.net.task_embedding.weight.shape == (len(ALL), 8)
    assert comb.net.scale_emb[0].out_features == 4


@pytest.mark.parametrize("method", ["finetune", "multitask"])
def test_single_level_meta_step_is_noop(method, model, batches):
    comb = make_combiner(method)
    before = snapshot(model)
    for step in range(1, 4):
        assert comb.meta_step(step, batches[0], model) is None
    assert_same(snapshot(model), before)


# ------------------------------------------------------------------------------------------ errors
def test_unknown_method():
    with pytest.raises(MeltrError, match="nope"):
        build_combiner("nope", ALL, "align")


@pytest.mark.parametrize("bad", [{"k": 0}, {"k": -3}, {"buffer_size": 0}, {"estimator": "magic"},
                                 {"net": "enormous"}])
def test_bad_meltr_config(bad):
    with pytest.raises(ValueError):
        MeltrConfig(**bad)
    with pytest.raises(ValueError):
        build_combiner("meltr", ALL, "align", bad)


def test_unknown_meltr_key():
    with pytest.raises(TypeError):
        build_combiner("meltr", ALL, "align", {"nonsense": 1})


# ------------------------------------------------------------------------------------------ meta step
def backbone_step_grads(model, comb, batch):
    """What the trainer leaves behind: .grad from the combined loss of the step's batch."""
    model.zero_grad(set_to_none=True)
    out = model(batch, comb.loss_names)
    comb(torch.stack([out[n] for n in comb.loss_names])).backward()
    comb.zero_grad(set_to_none=True)


def test_meta_step_schedule_and_buffer(model, batches):
    comb = make_combiner("meltr", k=3, buffer_size=2)
    results = {}
    for step in range(1, 7):
        results[step] = comb.meta_step(step, batches[step - 1], model)
        assert len(comb.buffer) == min(step, 2)
        assert comb.buffer[-1] is batches[step - 1]
    for step in (1, 2, 4, 5):
        assert results[step] is None
    for step in (3, 6):
        stats = results[step]
        assert stats["meta_skipped"] is False
        assert math.isfinite(stats["meta_grad_norm"]) and stats["meta_grad_norm"] > 0
    assert list(comb.buffer) == [batches[4], batches[5]]


@pytest.mark.parametrize("estimator", ["double_backward", "neumann", "jvp", "finite_difference"])
def test_meta_step_updates_net_only(model, batches, estimator):
    comb = make_combiner("meltr", k=2, estimator=estimator)
    backbone_step_grads(model, comb, batches[0])
    originals = dict(model.named_parameters())
    params, grads = snapshot(model), grad_snapshot(model)
    assert any(g is not None for g in grads.values())
    net_before = snapshot(comb.net)
    rng = torch.get_rng_state()
    assert comb.meta_step(1, batches[0], model) is None
    assert_same(snapshot(comb.net), net_before)
    stats = comb.meta_step(2, batches[1], model)
    assert stats["meta_skipped"] is False
    after = snapshot(comb.net)
    changed = [n for n in after if not torch.equal(after[n], net_before[n])]
    assert len(changed) >= len(after) - 1, f"unchanged MELTR parameters: {set(after) - set(changed)}"
    # the backbone keeps the very same Parameter objects (the backbone optimiser holds them) ...
    now = dict(model.named_parameters())
    assert now.keys() == originals.keys()
    swapped = [n for n in now if now[n] is not originals[n]]
    assert not swapped, f"meta step replaced backbone parameters {swapped}"
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in now.values())
    # ... with the same values and the same gradients, and the global RNG is as the trainer left it
    assert_same(snapshot(model), params)
    assert_same(grad_snapshot(model), grads)
    assert torch.equal(torch.get_rng_state(), rng)
    # the meta step does not leave gradients on phi for the next backbone step to accumulate into
    assert all(p.grad is None for p in comb.net.parameters())


def test_decoder_shares_word_embeddings_after_meta_step(model, batches):
    """UniVL ties the decoder's vocabulary to the text word embeddings; a meta step must not untie it."""
    comb = make_combiner("meltr", k=1, estimator="jvp")
    word = model.text.embeddings.word_embeddings.weight
    comb.meta_step(1, batches[0], model)
    assert model.text.embeddings.word_embeddings.weight is word
    assert model.decoder.embeddings.word_embeddings.weight is word
    # the next backbone step still trains the embedding the optimiser holds
    backbone_step_grads(model, comb, batches[1])
    assert word.grad is not None and word.grad.abs().sum() > 0


def test_meta_step_applies_the_hypergradient(model, batches, monkeypatch):
    """phi.grad is the estimator's value with its sign (the official phi.grad = -v), then Adam steps."""
    comb = make_combiner("meltr", k=1, clip=1e9, weight_decay=0.0, lr=1e-3)
    recorded = []
    real = meltr_module.hypergradient

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        recorded.append([g.detach().clone() for g in out])
        return out

    monkeypatch.setattr(meltr_module, "hypergradient", spy)
    before = [p.detach().clone() for p in comb.net.parameters()]
    stats = comb.meta_step(1, batches[0], model)
    (hg,) = recorded
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in hg)).item()
    assert stats["meta_grad_norm"] == pytest.approx(norm, rel=1e-5)
    for p, p0, g in zip(comb.net.parameters(), before, hg):
        big = g.abs() > 1e-5
        # Adam's first step moves every coordinate by ~lr against the sign of its gradient
        step = (p0 - p.detach())[big]
        assert torch.equal(torch.sign(step), torch.sign(g[big]))
        torch.testing.assert_close(step.abs(), torch.full_like(step, 1e-3), rtol=1e-2, atol=0)


def test_meta_step_clips(model, batches, monkeypatch):
    comb = make_combiner("meltr", k=1, clip=1e-3)
    seen = []
    real_step = comb.meta_opt.step

    def step(*a, **k):
        seen.append(torch.sqrt(sum((p.grad ** 2).sum() for p in comb.net.parameters())).item())
        return real_step(*a, **k)

    monkeypatch.setattr(comb.meta_opt, "step", step)
    stats = comb.meta_step(1, batches[0], model)
    assert stats["meta_grad_norm"] > 1e-3  # reported before clipping
    assert seen == [pytest.approx(1e-3, rel=1e-4)]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_hypergradient_skips_update(model, batches, monkeypatch, bad):
    comb = make_combiner("meltr", k=1)

    def poisoned(net, *args, **kwargs):
        out = [torch.zeros_like(p) for p in net.parameters()]
        out[-1].view(-1)[0] = bad  # one bad coordinate is enough
        return tuple(out)

    monkeypatch.setattr(meltr_module, "hypergradient", poisoned)
    backbone_step_grads(model, comb, batches[0])
    params, grads = snapshot(model), grad_snapshot(model)
    net_before = snapshot(comb.net)
    assert comb.meta_step(1, batches[0], model) == {"meta_skipped": True}
    assert_same(snapshot(comb.net), net_before)
    assert all(p.grad is None for p in comb.net.parameters())
    assert len(comb.meta_opt.state) == 0  # Adam's moments were not touched either
    assert_same(snapshot(model), params)
    assert_same(grad_snapshot(model), grads)


def record_meta_hypergradients(tok, batches, monkeypatch, runs, dropout):
    """Run one meta step per (estimator, options) on a fresh copy of the backbone; return the hypergradients."""
    recorded = []
    real = meltr_module.hypergradient

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        recorded.append(torch.cat([g.detach().flatten() for g in out]))
        return out

    monkeypatch.setattr(meltr_module, "hypergradient", spy)
    for est, extra in runs:
        model = make_model(tok, dropout=dropout)  # fresh: the comparison must not depend on earlier steps
        comb = make_combiner("meltr", k=2, estimator=est, seed=5, **extra)
        assert comb.meta_step(1, batches[0], model) is None
        assert comb.meta_step(2, batches[1], model)["meta_skipped"] is False
    assert len(recorded) == len(runs)
    return recorded


def rel_err(x, ref):
    return ((x - ref).norm() / ref.norm()).item()


def test_estimators_agree_inside_meta_step(tok, batches, monkeypatch):
    """Same seed, same buffer, dropout on: the exact estimators see the same batches and dropout masks."""
    db, jvp, neu = record_meta_hypergradients(
        tok, batches, monkeypatch, [("double_backward", {}), ("jvp", {}), ("neumann", {"neumann_terms": 0})], 0.1)
    assert db.norm() > 0
    assert rel_err(jvp, db) < 1e-4
    assert rel_err(neu, db) < 1e-6


def test_finite_difference_inside_meta_step(tok, batches, monkeypatch):
    db, fd = record_meta_hypergradients(
        tok, batches, monkeypatch, [("double_backward", {}), ("finite_difference", {"fd_eps": 1e-3})], 0.0)
    assert rel_err(fd, db) < 2e-2


def test_reg_direct_adds_the_regulariser_gradient(tok, batches, monkeypatch):
    """gamma > 0 with reg_direct adds exactly d/dphi gamma*|sum L - f_phi(L)| at the train batch."""
    model = make_model(tok, dropout=0.0)
    gamma = 0.5
    grads = {}
    for direct in (False, True):
        comb = make_combiner("meltr", k=1, buffer_size=1, gamma=gamma, reg_direct=direct, clip=1e9)
        real_step = comb.meta_opt.step
        got = []

        def step(*a, comb=comb, got=got, real_step=real_step, **k):
            got.append([p.grad.clone() for p in comb.net.parameters()])
            return real_step(*a, **k)

        monkeypatch.setattr(comb.meta_opt, "step", step)
        assert comb.meta_step(1, batches[2], model)["meta_skipped"] is False
        grads[direct] = got[0]
    torch.manual_seed(0)
    net = make_combiner("meltr", k=1).net  # same initial phi
    with torch.no_grad():
        out = model(batches[2], ALL)
        vec = torch.stack([out[n] for n in ["align"] + [n for n in ALL if n != "align"]])  # primary first
    reg = gamma * (vec.sum() - net(vec)).abs()
    expected = torch.autograd.grad(reg, list(net.parameters()))
    for g0, g1, e in zip(grads[False], grads[True], expected):
        torch.testing.assert_close(g1 - g0, e, rtol=1e-4, atol=1e-6)
    assert any(e.abs().max() > 1e-4 for e in expected)


# ------------------------------------------------------------------------------ meta_batches: current
@pytest.mark.parametrize("estimator, tol", [("finite_difference", 1e-2), ("jvp", 1e-4)])
def test_current_batch_meta_step_reuses_the_step_and_matches_the_official_hypergradient(
        tok, batches, estimator, tol, monkeypatch):
    """run_step with meta_batches=current: the meta update happens before the backbone step, on the
    step's own batch, and equals double_backward on that batch (B_t = B_v) up to the estimator's error."""
    from meltr.train.loop import run_step

    model = make_model(tok)
    comb = make_combiner("meltr", k=2, estimator=estimator, meta_batches="current", lr=1e-3)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.0)  # backbone frozen: the state is the same before and after
    seen = {}
    real = meltr_module.hypergradient

    def spy(*args, **kw):
        out = real(*args, **kw)
        seen["grads"], seen["args"], seen["kw"] = out, args, kw
        return out

    monkeypatch.setattr(meltr_module, "hypergradient", spy)
    before_backbone = snapshot(model)
    r1 = run_step(model, comb, opt, params, batches[0], 1, 11, torch.device("cpu"))
    assert r1.meta is None and "grads" not in seen
    r2 = run_step(model, comb, opt, params, batches[1], 2, 12, torch.device("cpu"))
    # The reported norm is that of the hypergradient the estimator returned, before MELTR's clipping.
    norm = float(torch.cat([g.reshape(-1) for g in seen["grads"]]).norm())
    assert set(r2.meta) == {"meta_skipped", "meta_grad_norm"} and r2.meta["meta_skipped"] is False
    assert norm > 0 and r2.meta["meta_grad_norm"] == pytest.approx(norm, rel=1e-5)
    assert seen["kw"]["losses"] is not None and seen["kw"]["v"] is not None  # the step's own forward reused
    # finite_difference perturbs W in place and undoes it: equal up to one rounding per element
    assert seen["kw"]["inplace"] == (estimator == "finite_difference")
    assert_same(snapshot(model), before_backbone, ulps=2 if estimator == "finite_difference" else 0)
    # The reference: the official computation on the same batch and dropout masks, same (pre-update) phi.
    _, task_losses, _, params_used, _ = seen["args"]

    def val_loss(ps):
        return task_losses(ps)[0]

    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        ref_comb = make_combiner("meltr")  # same seed: the net as it was before the meta update
        ref = real(ref_comb.net, task_losses, val_loss, params_used, "double_backward")
    got = torch.cat([g.reshape(-1) for g in seen["grads"]])
    want = torch.cat([g.reshape(-1) for g in ref])
    assert float((got - want).norm() / want.norm()) < tol


def test_current_batches_need_a_first_order_estimator():
    with pytest.raises(ValueError, match="meta_batches"):
        MeltrConfig(meta_batches="current", estimator="double_backward")
    with pytest.raises(ValueError, match="meta_batches"):
        MeltrConfig(meta_batches="sometimes")


@pytest.mark.parametrize("eviction", ["fifo", "random"])
def test_replay_buffer_keeps_its_size_and_the_newest_batch(model, batches, eviction):
    comb = make_combiner("meltr", k=100, buffer_size=3, buffer_eviction=eviction)
    for step, batch in enumerate(batches * 3, start=1):
        comb.meta_step(step, batch, model)
        assert len(comb.buffer) == min(step, 3)
        assert comb.buffer[-1] is batch
    if eviction == "fifo":
        assert comb.buffer == (batches * 3)[-3:]


def test_meltr_state_round_trips_buffer_rng_and_meta_optimiser(model, batches):
    comb = make_combiner("meltr", k=2, buffer_size=3)
    for step, batch in enumerate(batches[:4], start=1):
        comb.meta_step(step, batch, model)
    clone = make_combiner("meltr", k=2, buffer_size=3)
    clone.load_state_dict(comb.state_dict())
    assert [b is x for b, x in zip(clone.buffer, comb.buffer)] == [True] * 3
    assert clone.rng.random() == comb.rng.random()
    assert clone.meta_opt.state_dict()["state"].keys() == comb.meta_opt.state_dict()["state"].keys()


# ------------------------------------------------------------------------------------------ meta_batch_size
class _BatchRecorder(torch.nn.Module):
    """A linear model with three losses (squared error to batch["y"], or to 0) that records every batch it is
    called with, so a test can say which batches, and how many samples, a meta step's forwards saw."""

    def __init__(self, features: int):
        super().__init__()
        self.w = torch.nn.Linear(features, 3)
        self.seen: list[dict] = []

    def forward(self, batch, names):
        self.seen.append(batch)
        per = ((self.w(batch["x"]) - batch.get("y", 0)) ** 2).mean(0)
        return {n: per[i] for i, n in enumerate(names)}


@pytest.mark.parametrize("meta_batches,estimator", [("current", "finite_difference"), ("current", "jvp"),
                                                    ("replay", "finite_difference"), ("replay", "double_backward")])
def test_meta_batch_size_uses_exactly_that_many_samples_in_the_meta_step(meta_batches, estimator):
    """meltr.meta_batch_size 3 on batches of 8: every forward of the meta step sees 3 samples, the training step
    still 8; without it the meta step sees the whole batch."""
    from meltr.train.loop import run_step

    for size, expected in ((3, 3), (None, 8)):
        torch.manual_seed(0)
        model = _BatchRecorder(4)
        combiner = build_combiner("meltr", ["a", "b", "c"], "a", {"k": 1, "meta_batches": meta_batches,
                                                                 "estimator": estimator, "meta_batch_size": size})
        params = list(model.parameters())
        opt = torch.optim.SGD(params, lr=0.1)
        g = torch.Generator().manual_seed(1)
        batch = {"x": torch.randn(8, 4, generator=g), "y": torch.randn(8, 3, generator=g)}
        model.seen.clear()
        r = run_step(model, combiner, opt, params, batch, 1, 0, torch.device("cpu"))
        assert r.meta is not None and r.meta["meta_skipped"] is False
        sizes = [b["x"].shape[0] for b in model.seen]
        assert sizes[0] == 8  # the training step's own forward
        assert sizes[1:] and set(sizes[1:]) == {expected}, sizes


# ------------------------------------------------------------------------------------------ the official schedule
def test_official_replay_schedule_matches_the_official_loop():
    """mlvlab/MELTR univl/main.py, by hand for k = 3 over seven steps (global_step counts from 0):

        step (ours, from 1)   1    2   3   4        5   6   7
        global_step           0    1   2   3        4   5   6
        meta step             yes  -   -   yes      -   -   yes
        draws from            {b1} -   -   {b1..b3} -   -   {b1..b6}   (at step 1 the empty buffer's
                                                                        draws keep the current batch)
        buffer after          b1   b2  b3  b4 ...                     (appended after the meta step)

    `ours`: meta steps at 3 and 6, drawing from the buffer with the step's batch already in it."""
    batches = [{"id": torch.tensor([i]), "x": torch.full((2, 2), float(i))} for i in range(1, 8)]
    for schedule, meta_steps, pools in (
            ("official", [1, 4, 7], [{1}, {1, 2, 3}, {1, 2, 3, 4, 5, 6}]),
            ("ours", [3, 6], [{1, 2, 3}, {1, 2, 3, 4, 5, 6}])):
        model = _BatchRecorder(2)
        comb = build_combiner("meltr", ["a", "b", "c"], "a", {"k": 3, "meta_batches": "replay",
                                                             "estimator": "finite_difference",
                                                             "replay_schedule": schedule})
        got = []
        for step, batch in enumerate(batches, start=1):
            model.seen.clear()
            if comb.meta_step(step, batch, model) is not None:
                got.append((step, {int(b["id"][0]) for b in model.seen}))
            assert comb.buffer[-1] is batch  # every step's batch is in the buffer once the step is done
        assert [s for s, _ in got] == meta_steps, schedule
        for (step, seen), pool in zip(got, pools):
            assert seen and seen <= pool, (schedule, step, seen, pool)
        assert got[0][1] == ({1} if schedule == "official" else got[0][1])  # step 1: only the current batch
