"""Hypergradient estimators against brute-force references on tiny problems.

Notation as in meltr/meta/hypergradient.py: W backbone parameters, phi combiner parameters, L(W) the task-loss
vector on the training batch, L_train = f_phi(L(W)), g_v = dL_val/dW. The official value is
-d/dphi < dL_train/dW (W, phi), g_v > with g_v held fixed; `neumann` replaces g_v by sum_i (I - alpha H)^i g_v.
"""
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from meltr.meta.hypergradient import ESTIMATORS, hypergradient
from meltr.meta.net import MetaLossTransformer

M = 4  # task losses in the MLP problem


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def hg(combiner, problem, method, **kw):
    """The estimator as MeltrCombiner calls it: under the math SDPA kernel (double/forward-mode AD)."""
    with sdpa_kernel(SDPBackend.MATH):
        out = hypergradient(combiner, problem.task_losses, problem.val_loss, problem.params, method, **kw)
    assert len(out) == len(list(combiner.parameters()))
    for g, p in zip(out, combiner.parameters()):
        assert g.shape == p.shape and g.dtype == p.dtype
    return out


def flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def rel_err(x, ref):
    x, ref = flat(x), flat(ref)
    return ((x - ref).norm() / ref.norm()).item()


def meltr_net(dtype, seed=0):
    torch.manual_seed(seed)
    return MetaLossTransformer(M, f_dim=8, h1=4, h2=8, heads=2).to(dtype).eval()


class MLPProblem:
    """W = a 2-3-4 tanh MLP (21 scalars) plus one scalar `u` that only the validation loss uses."""

    def __init__(self, dtype, seed=0):
        g = torch.Generator().manual_seed(seed)

        def r(*shape, scale=1.0):
            return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

        self.x_t, self.y_t = r(8, 2), r(8, M)
        self.x_v, self.y_v = r(6, 2), r(6)
        self.params = [r(3, 2, scale=0.8).requires_grad_(), r(3, scale=0.3).requires_grad_(),
                       r(M, 3, scale=0.8).requires_grad_(), r(1).requires_grad_()]

    @staticmethod
    def net(ps, x):
        a, b, c, _ = ps
        return torch.tanh(x @ a.t() + b) @ c.t()

    def task_losses(self, ps):
        out = self.net(ps, self.x_t)
        scale = torch.arange(1, M + 1, dtype=out.dtype)
        return ((out - self.y_t) ** 2).mean(0) + 0.1 * scale * (out ** 4).mean(0)

    def val_loss(self, ps):
        out = self.net(ps, self.x_v).sum(1)
        return ((out - self.y_v) ** 2).mean() + 0.5 * (ps[3] ** 2).sum() * out.abs().mean()


# ------------------------------------------------------------------------------------------ brute force
def brute_force_official(combiner, problem, h=1e-6):
    """-dF/dphi by central differences, F(phi) = < grad_W f_phi(L(W)), g_v >, g_v = dL_val/dW fixed."""
    params = problem.params
    g_v = torch.autograd.grad(problem.val_loss(params), params, allow_unused=True)
    g_v = [torch.zeros_like(p) if g is None else g for g, p in zip(g_v, params)]
    names = [n for n, _ in combiner.named_parameters()]
    shapes = [p.shape for _, p in combiner.named_parameters()]
    phi0 = flat([p.detach() for p in combiner.parameters()])

    def unflatten(vec):
        out, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            out[n] = vec[i:i + k].reshape(s)
            i += k
        return out

    def F(vec):
        with sdpa_kernel(SDPBackend.MATH):
            l_train = functional_call(combiner, unflatten(vec), (problem.task_losses(params),))
        gw = torch.autograd.grad(l_train, params, allow_unused=True)
        return sum((g * v).sum() for g, v in zip(gw, g_v) if g is not None).item()

    grad = torch.empty_like(phi0)
    for i in range(phi0.numel()):
        e = torch.zeros_like(phi0)
        e[i] = h
        grad[i] = (F(phi0 + e) - F(phi0 - e)) / (2 * h)
    return [-x for x in unflatten(grad).values()]


def test_double_backward_equals_brute_force(f64):
    problem, net = MLPProblem(torch.float64), meltr_net(torch.float64)
    got = hg(net, problem, "double_backward")
    ref = brute_force_official(net, problem)
    scale = flat(ref).abs().max()
    assert scale > 1e-3
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-7 * scale)


# ------------------------------------------------------------------------------------------ estimators agree
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_jvp_matches_double_backward(dtype, tol):
    problem, net = MLPProblem(dtype, seed=1), meltr_net(dtype, seed=1)
    ref = hg(net, problem, "double_backward")
    assert flat(ref).norm() > 0
    assert rel_err(hg(net, problem, "jvp"), ref) <= tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("midpoint", [True, False])
def test_finite_difference_matches_double_backward(dtype, midpoint):
    problem, net = MLPProblem(dtype, seed=2), meltr_net(dtype, seed=2)
    ref = hg(net, problem, "double_backward")
    assert rel_err(hg(net, problem, "finite_difference", fd_midpoint=midpoint), ref) <= 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inplace_finite_difference_matches_double_backward(dtype):
    """The wrapper-friendly path (in-place perturbation, v from .backward()) computes the same value and
    hands the parameters back as it found them, to within one rounding of the perturbation."""
    problem, net = MLPProblem(dtype, seed=2), meltr_net(dtype, seed=2)
    ref = hg(net, problem, "double_backward")
    before = [p.detach().clone() for p in problem.params]
    got = hg(net, problem, "finite_difference", inplace=True)
    assert rel_err(got, ref) <= 1e-2
    one_sided = hg(net, problem, "finite_difference", losses=problem.task_losses(problem.params).detach())
    assert rel_err(got, one_sided) <= 1e-4  # the same one-sided difference as the functional path
    for p, b in zip(problem.params, before):
        torch.testing.assert_close(p.detach(), b, rtol=4 * torch.finfo(dtype).eps, atol=0)
        assert p.grad is None
    with pytest.raises(ValueError, match="inplace"):
        hg(net, problem, "jvp", inplace=True)


def test_finite_difference_converges_as_eps_shrinks(f64):
    problem, net = MLPProblem(torch.float64, seed=3), meltr_net(torch.float64, seed=3)
    ref = hg(net, problem, "double_backward")
    errs = [rel_err(hg(net, problem, "finite_difference", fd_eps=eps), ref) for eps in (1e-1, 1e-2, 1e-3)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-5  # second-order accurate: ~100x per decade of eps


@pytest.mark.parametrize("method", ESTIMATORS)
def test_estimators_leave_inputs_untouched(method):
    problem, net = MLPProblem(torch.float64, seed=4), meltr_net(torch.float64, seed=4)
    before = [p.detach().clone() for p in problem.params]
    phi_before = [p.detach().clone() for p in net.parameters()]
    hg(net, problem, method)
    for p, b in zip(problem.params, before):
        assert torch.equal(p, b) and p.grad is None
    for p, b in zip(net.parameters(), phi_before):
        assert torch.equal(p, b) and p.grad is None


def test_unknown_method():
    problem, net = MLPProblem(torch.float64), meltr_net(torch.float64)
    with pytest.raises(ValueError, match="magic"):
        hypergradient(net, problem.task_losses, problem.val_loss, problem.params, "magic")


# ------------------------------------------------------------------------------------------ transformer backbone
def vlm_problem(dtype, dropout):
    """The tiny VideoLanguageModel, called through functional_call exactly as MeltrCombiner.meta_step does."""
    from meltr.data.batching import Batcher, tokenize
    from meltr.models.presets import ModelPreset
    from meltr.models.tokenizer import load_tokenizer
    from meltr.models.losses import LOSS_NAMES
    from meltr.models.univl import VideoLanguageModel

    tok = load_tokenizer()
    torch.manual_seed(0)
    preset = ModelPreset("test", hidden=16, heads=2, text_layers=1, video_layers=1, cross_layers=1,
                         decoder_layers=1, intermediate=32, dropout=dropout)
    model = VideoLanguageModel(preset, 12, len(tok), max_words=8, max_frames=4).to(dtype).train()
    tz = tokenize(tok, ["a man is cooking", "a dog runs in the park", "two people talk", "a car on a road"], 8)
    batcher = Batcher(tok)
    batch_t, batch_v = (batcher.make(torch.randn(4, 4, 12, dtype=dtype, generator=torch.Generator().manual_seed(s)),
                                     tz, torch.Generator().manual_seed(s)) for s in (1, 2))
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    class P:
        params = [p for p in model.parameters() if p.requires_grad]

        @staticmethod
        def run(ps, batch, losses, seed):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # every forward of one meta step sees the same dropout masks
                return functional_call(model, dict(zip(names, ps)), (batch, losses))

        @staticmethod
        def task_losses(ps):
            out = P.run(ps, batch_t, LOSS_NAMES, 11)
            return torch.stack([out[n] for n in LOSS_NAMES])

        @staticmethod
        def val_loss(ps):
            return P.run(ps, batch_v, ("align",), 12)["align"]

    torch.manual_seed(5)
    net = MetaLossTransformer(len(LOSS_NAMES), f_dim=8, h1=4, h2=8, heads=2).to(dtype).eval()
    return P, net


def test_transformer_backbone_float32():
    problem, net = vlm_problem(torch.float32, dropout=0.1)
    ref = hg(net, problem, "double_backward")
    assert flat(ref).norm() > 0
    assert rel_err(hg(net, problem, "jvp"), ref) <= 1e-5
    assert rel_err(hg(net, problem, "neumann", neumann_terms=0), ref) == 0


def test_transformer_backbone_float64():
    problem, net = vlm_problem(torch.float64, dropout=0.1)
    ref = hg(net, problem, "double_backward")
    assert rel_err(hg(net, problem, "jvp"), ref) <= 1e-10
    # the joint loss's hinge and align's sharp softmax need a small step; float64 affords it
    assert rel_err(hg(net, problem, "finite_difference", fd_eps=1e-4), ref) <= 1e-3


# ------------------------------------------------------------------------------------------ neumann
def neumann_explicit(combiner, problem, terms, alpha):
    """-d/dphi < dL_train/dW, p > with p = sum_{i=0..K} (I - alpha H)^i g_v and H the explicit Hessian."""
    params = problem.params
    shapes = [p.shape for p in params]
    w0 = flat([p.detach() for p in params])

    def unflatten(vec):
        out, i = [], 0
        for s in shapes:
            k = math.prod(s)
            out.append(vec[i:i + k].reshape(s))
            i += k
        return out

    def l_train(vec):
        return combiner(problem.task_losses(unflatten(vec)))

    with sdpa_kernel(SDPBackend.MATH):
        H = torch.autograd.functional.hessian(l_train, w0)
        w = w0.clone().requires_grad_(True)
        (g_v,) = torch.autograd.grad(problem.val_loss(unflatten(w)), w)
        step = torch.eye(len(w0)) - alpha * H
        p, term = g_v.clone(), g_v.clone()
        for _ in range(terms):
            term = step @ term
            p = p + term
        (g_train,) = torch.autograd.grad(l_train(w), w, create_graph=True)
        phi = list(combiner.parameters())
        ref = torch.autograd.grad(g_train @ p, phi, allow_unused=True)  # e.g. the last norm's bias: dL/dW-free
    return [torch.zeros_like(q) if r is None else -r for r, q in zip(ref, phi)], H


def test_neumann_equals_explicit_hessian(f64):
    problem, net = MLPProblem(torch.float64, seed=5), meltr_net(torch.float64, seed=5)
    ref0, H = neumann_explicit(net, problem, 0, 0.0)
    assert H.shape == (22, 22)
    torch.testing.assert_close(H, H.t())
    alpha = 0.5 / torch.linalg.matrix_norm(H, ord=2).item()  # the Neumann terms are large but converge
    for terms in (1, 3, 6):
        ref, _ = neumann_explicit(net, problem, terms, alpha)
        assert rel_err(ref, ref0) > 0.1  # the terms matter, so the comparison below is discriminating
        got = hg(net, problem, "neumann", neumann_terms=terms, neumann_alpha=alpha)
        assert rel_err(got, ref) < 1e-10
    torch.testing.assert_close(flat(hg(net, problem, "double_backward")), flat(ref0), rtol=1e-10, atol=1e-12)


def test_neumann_zero_terms_is_double_backward(f64):
    problem, net = MLPProblem(torch.float64, seed=6), meltr_net(torch.float64, seed=6)
    db = hg(net, problem, "double_backward")
    for alpha in (1e-2, 0.3):
        got = hg(net, problem, "neumann", neumann_terms=0, neumann_alpha=alpha)
        for a, b in zip(got, db):
            assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------ quadratic inner problem
class SoftplusSum(nn.Module):
    def __init__(self, phi):
        super().__init__()
        self.phi = nn.Parameter(phi.clone())

    def forward(self, losses):
        return (nn.functional.softplus(self.phi) * losses).sum()


class Quadratic:
    """L_m(W) = 0.5 (W - c_m)^T A_m (W - c_m), f_phi(L) = sum softplus(phi_m) L_m, L_val = 0.5 |W - t|^2."""

    def __init__(self, n=5, m=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.A = []
        for _ in range(m):
            q, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
            self.A.append(q @ torch.diag(0.5 + 1.5 * torch.rand(n, generator=g)) @ q.t())
        self.c = torch.randn(m, n, generator=g)
        self.t = torch.randn(n, generator=g)
        self.phi = torch.randn(m, generator=g) * 0.5

    def w_star(self, phi):
        s = nn.functional.softplus(phi)
        H = sum(si * a for si, a in zip(s, self.A))
        return torch.linalg.solve(H, sum(si * a @ ci for si, a, ci in zip(s, self.A, self.c))), H

    def l_val(self, phi):
        w, _ = self.w_star(phi)
        return 0.5 * ((w - self.t) ** 2).sum()

    def problem(self):
        w, H = self.w_star(self.phi)
        quad = self

        class P:
            params = [w.clone().requires_grad_(True)]

            @staticmethod
            def task_losses(ps):
                d = ps[0] - quad.c
                return torch.stack([0.5 * di @ a @ di for di, a in zip(d, quad.A)])

            @staticmethod
            def val_loss(ps):
                return 0.5 * ((ps[0] - quad.t) ** 2).sum()

        return P, SoftplusSum(self.phi), H


def test_quadratic_exact_hypergradient_and_neumann_limit(f64):
    quad = Quadratic()
    problem, comb, H = quad.problem()
    (w,) = problem.params
    # W is the inner optimum: dL_train/dW = 0
    (g_train,) = torch.autograd.grad(comb(problem.task_losses([w])), w)
    assert g_train.abs().max() < 1e-12

    # brute force: central differences of L_val(W*(phi)), W*(phi) in closed form
    h = 1e-6
    brute = torch.stack([(quad.l_val(quad.phi + h * e) - quad.l_val(quad.phi - h * e)) / (2 * h)
                         for e in torch.eye(len(quad.phi))])
    # the implicit-function formula -(d^2 L_tr / dphi dW) H^-1 g_v agrees with it (sign included)
    (g_v,) = torch.autograd.grad(problem.val_loss([w]), w)
    (g_tr,) = torch.autograd.grad(comb(problem.task_losses([w])), w, create_graph=True)
    (mixed,) = torch.autograd.grad(g_tr @ torch.linalg.solve(H, g_v), comb.phi, retain_graph=True)
    exact = -mixed
    torch.testing.assert_close(exact, brute, rtol=1e-6, atol=1e-9)
    assert brute.abs().min() > 1e-3

    # alpha * neumann(K) -> exact as K grows; alpha keeps I - alpha H contractive with positive spectrum
    eig = torch.linalg.eigvalsh(H)
    alpha = 1.0 / eig.max().item()
    assert 1 - alpha * eig.min().item() < 0.95
    errors = []
    for terms in (0, 1, 2, 5, 10, 20, 200):
        (got,) = hg(comb, problem, "neumann", neumann_terms=terms, neumann_alpha=alpha)
        errors.append(((alpha * got - exact).norm() / exact.norm()).item())
    assert all(a > b for a, b in zip(errors[:-1], errors[1:-1])), errors  # decreasing until round-off
    assert errors[0] > 0.1  # the official K=0 value is far from the exact hypergradient here
    assert errors[-2] < 1e-6 and errors[-1] < 1e-12, errors

    # the official value is what MELTR assigns to phi.grad: for K=0 it is -(d^2 L_tr / dphi dW) g_v
    (official,) = hg(comb, problem, "double_backward")
    (ref,) = torch.autograd.grad(g_tr @ g_v, comb.phi)
    torch.testing.assert_close(official, -ref)
