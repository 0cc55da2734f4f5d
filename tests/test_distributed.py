"""MELTR under DDP (gloo, two CPU processes): the combiner's gradient is all-reduced, so its
parameters stay identical on every rank although each rank sees different data."""
from __future__ import annotations


import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from meltr.combiners import build_combiner
from meltr.data.batching import Batcher, tokenize
from meltr.meta.meltr_net import NET_PRESETS, MeltrNetPreset
from meltr.models.presets import ModelPreset
from meltr.models.tokenizer import load_tokenizer
from meltr.models.univl import LOSS_NAMES, VideoLanguageModel
from meltr.parallel import wrap_ddp
from meltr.train import run_step

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


