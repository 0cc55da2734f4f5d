"""MELTR under DDP (gloo, two CPU processes): the combiner's gradient is all-reduced, so its
parameters stay identical on every rank although each rank sees different data."""
from __future__ import annotations


import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from meltr.combiners import build_combiner
from meltr.data.batching import Batcher, tokenize
from meltr.meta.net import NET_PRESETS, MeltrNetPreset
from meltr.models.presets import ModelPreset
from meltr.models.tokenizer import load_tokenizer
from meltr.models.losses import LOSS_NAMES
from meltr.models.univl import VideoLanguageModel
from meltr.train.parallel import wrap_ddp
from meltr.train.loop import run_step

CAPTIONS = ["a red circle moves left", "a blue square moves up", "a green cross moves down", "a white bar"]


def _worker(rank: int, world: int, init_file: str, estimator: str, meta_batches: str, out: dict):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        NET_PRESETS["test"] = MeltrNetPreset(f_dim=8, h1=4, h2=8, heads=2)
        tok = load_tokenizer()
        torch.manual_seed(0)  # same initial weights on every rank, as DDP requires
        preset = ModelPreset("test", hidden=16, heads=2, text_layers=1, video_layers=1, cross_layers=1,
                             decoder_layers=1, intermediate=32)
        model = wrap_ddp(VideoLanguageModel(preset, 12, len(tok), max_words=8, max_frames=4), torch.device("cpu"))
        comb = build_combiner("meltr", list(LOSS_NAMES), "align",
                              {"net": "test", "k": 1, "estimator": estimator, "meta_batches": meta_batches,
                               "seed": 0})
        params = list(model.parameters())
        opt = torch.optim.AdamW(params, lr=1e-3)
        batcher = Batcher(tok)
        local_grads = []
        real_update = comb._update_net

        def record(grads):
            local_grads.append(torch.cat([g.reshape(-1) for g in grads]).clone())
            return real_update(grads)

        comb._update_net = record
        for step in range(1, 4):
            gen = torch.Generator().manual_seed(1000 * rank + step)  # different data on each rank
            video = torch.randn(4, 4, 12, generator=gen)
            batch = batcher.make(video, tokenize(tok, CAPTIONS, 8), gen)
            r = run_step(model, comb, opt, params, batch, step, step, torch.device("cpu"))
            assert r.meta is not None and not r.meta["meta_skipped"]
        out[rank] = {"net": torch.cat([p.detach().reshape(-1) for p in comb.net.parameters()]),
                     "local": local_grads[0],
                     "backbone": torch.cat([p.detach().reshape(-1) for p in model.parameters()])}
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("estimator, meta_batches", [("double_backward", "replay"),
                                                      ("finite_difference", "current")])
def test_meltr_parameters_identical_across_ranks(tmp_path, estimator, meta_batches):
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), estimator, meta_batches, out), nprocs=2, join=True)
    r0, r1 = out[0], out[1]
    assert not torch.allclose(r0["local"], r1["local"])  # each rank's own hypergradient differs...
    assert torch.equal(r0["net"], r1["net"])  # ...yet MELTR is the same everywhere after meta steps
    assert torch.allclose(r0["backbone"], r1["backbone"])  # and DDP kept the backbones in step




# ------------------------------------------------------------------------------------------ FSDP2
class ThreeHeads(torch.nn.Module):
    """A small MLP with three per-example regression losses (exactly decomposable over ranks)."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh())
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x, y):  # FSDP2 gathers the shards in forward hooks: call the module itself
        out = self.head(self.body(x))
        return ((out - y) ** 2).mean(0) + 0.1 * (out ** 4).mean(0)


def _data(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)


def _meltr_net():
    from meltr.meta.net import MetaLossTransformer

    torch.manual_seed(1)
    return MetaLossTransformer(3, f_dim=8, h1=4, h2=8, heads=2).eval()


def _fsdp_worker(rank: int, world: int, init_file: str, out: dict):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from meltr.meta import hypergradient

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model, net = ThreeHeads(), _meltr_net()
        mesh = init_device_mesh("cpu", (world,))
        fully_shard(model.body, mesh=mesh)
        fully_shard(model, mesh=mesh, reshard_after_forward=True)  # see hypergradient(inplace=True)
        params = list(model.parameters())
        assert all(type(p).__name__ == "DTensor" for p in params)  # really sharded
        (xt, yt), (xv, yv) = _data(rank), _data(100 + rank)  # each rank its half of the global batch

        def task_losses(_):
            return model(xt, yt)

        def val_loss(_):
            return model(xv, yv)[0]

        before = [p.full_tensor().clone() for p in params]
        got = hypergradient(net, task_losses, val_loss, params, "finite_difference", inplace=True, fd_eps=3e-4)
        out[rank] = {"hg": torch.cat([g.reshape(-1) for g in got]),
                     "restored": max(float((p.full_tensor() - b).abs().max()) for p, b in zip(params, before))}
    finally:
        dist.destroy_process_group()


def test_finite_difference_under_fsdp2_matches_single_process_double_backward(tmp_path):
    """`finite_difference` with inplace=True runs on FSDP2-sharded parameters (DTensor shards, gradients
    reduce-scattered by .backward()) and gives the official double_backward value of the global batch."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from meltr.meta import hypergradient

    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_fsdp_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)

    torch.manual_seed(0)
    model, net = ThreeHeads(), _meltr_net()
    xt, yt = (torch.cat(t) for t in zip(_data(0), _data(1)))
    xv, yv = (torch.cat(t) for t in zip(_data(100), _data(101)))
    params, names = list(model.parameters()), [n for n, _ in model.named_parameters()]

    def task_losses(ps):
        return torch.func.functional_call(model, dict(zip(names, ps)), (xt, yt))

    def val_loss(ps):
        return torch.func.functional_call(model, dict(zip(names, ps)), (xv, yv))[0]

    with sdpa_kernel(SDPBackend.MATH):
        ref = torch.cat([g.reshape(-1) for g in hypergradient(net, task_losses, val_loss, params, "double_backward")])
    assert torch.equal(out[0]["hg"], out[1]["hg"])  # one value on every rank
    assert float((out[0]["hg"] - ref).norm() / ref.norm()) <= 1e-2
    assert out[0]["restored"] < 1e-6 and out[1]["restored"] < 1e-6  # shards put back after the perturbation
