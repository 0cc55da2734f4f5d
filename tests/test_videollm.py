"""The VideoLLM family (meltr/models/videollm.py): losses, the evaluation interface, MELTR's hypergradient on it,
and a two-process FSDP2 meta step."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from meltr.data.batching import Batcher, tokenize
from meltr.data.samplers import qa_text, task_tensors
from meltr.meta import MetaLossTransformer, hypergradient
from meltr.models.build import build_model, parameter_count
from meltr.models.losses import VLLM_TASK_LOSSES, primary_loss, task_losses
from meltr.models.presets import PRESETS, model_family
from meltr.models.tokenizer import load_tokenizer

B, T, D = 4, 6, 12
ANSWERS = ["red", "blue"]
RECORDS = {
    "retrieval": [{"video_id": str(i), "captions": [c]} for i, c in
                  enumerate(["a red ball moves left", "a blue square blinks", "two circles spin", "a star grows"])],
    "multiple_choice": [{"video_id": str(i), "question": "what does the ball do", "answer": i % 5,
                         "options": ["moves left", "blinks", "spins", "stops", "grows"],
                         "subtitles": "he said go" if i % 2 else ""} for i in range(B)],
    "open_ended": [{"video_id": str(i), "question": "what colour is the ball", "answer": ANSWERS[i % 2]}
                   for i in range(B)],
    "count": [{"video_id": str(i), "question": "how many times does it blink", "answer": 1 + i} for i in range(B)],
}
RECORDS["captioning"] = RECORDS["retrieval"]
# The parameters (top-level modules) each loss must reach, beside the language model and the projector.
OWN = {"vtc": {"vtc_text", "vtc_video", "logit_scale"}, "vtm": {"vtm_head"}, "mvm": {"mvm_head", "visual_mask"},
       "m_lm": {"visual_mask"}, "count": {"count_head"}, "lm": set(), "answer_lm": set(), "prompt_lm": set(),
       "mc": set()}
HEADS = set().union(*OWN.values())


def make_batch(family: str, seed: int = 0, dtype=torch.float32) -> dict:
    tok = load_tokenizer()
    recs = RECORDS[family]
    texts = [r["captions"][0] for r in recs] if family in ("retrieval", "captioning") else \
        [qa_text(r, family) for r in recs]
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(B, T, D, generator=g).to(dtype)
    return Batcher(tok).make(video, tokenize(tok, texts, 24), g, **task_tensors(recs, tok, family, 32, ANSWERS))


def tiny(seed: int = 0):
    return build_model("vllm-tiny", D, load_tokenizer().vocab_size, 32, T, seed, num_answers=len(ANSWERS))


def test_presets_are_a_videollm_family_with_llama_proportions():
    vllm = [p for p in PRESETS.values() if p.family == "videollm"]
    assert {p.name for p in vllm} >= {"vllm-tiny", "vllm-500m", "vllm-1b", "vllm-3b", "vllm-8b"}
    assert model_family("vllm-1b") == "videollm" and model_family("tiny") == "univl"
    for p in vllm:
        assert p.heads % p.kv_heads == 0 and p.hidden % p.heads == 0
    for name, billions in (("vllm-500m", 0.5), ("vllm-1b", 1.0), ("vllm-3b", 3.0), ("vllm-8b", 7.5)):
        assert abs(parameter_count(name) / 1e9 - billions) / billions < 0.15, name
        p = PRESETS[name]
        if billions >= 1:  # the bench feeds realistic lengths: at least 1k tokens per sample
            assert p.frames * p.tokens_per_frame + p.words >= 1024


@pytest.mark.parametrize("family", list(VLLM_TASK_LOSSES))
def test_losses_are_finite_and_each_moves_what_it_should(family, one_thread):
    model = tiny().train()
    batch = make_batch(family)
    names = task_losses(family, model_family="videollm")
    assert names[0] == primary_loss(family, "videollm") and len(names) >= 5  # a primary and four auxiliaries
    together = model(batch, names)
    assert list(together) == list(names) and all(torch.isfinite(v) and v.dim() == 0 for v in together.values())
    for name in names:
        model.zero_grad(set_to_none=True)
        alone = model(batch, [name])[name]
        assert torch.allclose(alone, together[name], rtol=1e-5, atol=1e-6), name  # each pass run once, same value
        alone.backward()
        moved = {n.split(".")[0] for n, p in model.named_parameters()
                 if p.grad is not None and p.grad.abs().sum() > 0}
        assert {"lm", "projector"} <= moved, name
        assert moved & HEADS == OWN[name], (name, moved)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown losses"):
        tiny()(make_batch("captioning"), ["align"])


def test_evaluation_interface(one_thread):
    tok = load_tokenizer()
    model = tiny().eval()
    batch = make_batch("retrieval")
    v, vm = batch["video"], batch["video_mask"]
    scores = model.retrieval_scores(batch["text_ids"], batch["text_mask"], v, vm)
    assert scores.shape == (B, B) and torch.all(scores.abs() <= 1 + 1e-5)  # cosines
    for beams in (1, 3):
        caps = model.caption_ids(v, vm, tok.cls_token_id, tok.sep_token_id, 5, beams)
        assert len(caps) == B and all(1 <= len(c) <= 5 and tok.sep_token_id not in c for c in caps)
    mc = task_tensors(RECORDS["multiple_choice"], tok, "multiple_choice", 32)
    assert model.option_scores(mc, v, vm).shape == (B, 5)
    # Open-ended evaluation sees only the question: no continuation tokens in its input.
    oe = task_tensors(RECORDS["open_ended"], tok, "open_ended", 32, ANSWERS, with_answers=False)
    assert not oe["ans_type"].any()
    assert not any(tok.convert_tokens_to_ids(a) in row for a in ANSWERS for row in oe["ans_ids"].tolist())
    answers = model.answer_texts(oe, v, vm, ANSWERS, tok)
    assert len(answers) == B and all(isinstance(a, str) and a for a in answers)
    count = task_tensors(RECORDS["count"], tok, "count", 32)
    assert model.count_predictions(count, v, vm).shape == (B,)


def test_multiple_choice_scores_each_option_by_its_own_tokens():
    """An option's score is the mean log-likelihood of its tokens only: the question's tokens are shared, so a
    model that put all its mass on the question would still rank options by the options alone."""
    tok = load_tokenizer()
    mc = task_tensors(RECORDS["multiple_choice"], tok, "multiple_choice", 32)
    kinds = mc["opt_type"] * mc["opt_mask"]
    for row, kind in zip(mc["opt_ids"][0], kinds[0]):
        option = tok.decode(row[kind.bool()].tolist(), skip_special_tokens=True)
        assert option in RECORDS["multiple_choice"][0]["options"]


# ------------------------------------------------------------------------------------------ hypergradient
def problem(family: str, dtype, current: bool):
    """The tiny VideoLLM's task losses and primary (validation) loss, called through functional_call as the
    MELTR combiner's meta step does; `current`: the validation batch is the training batch."""
    torch.manual_seed(0)
    model = tiny().to(dtype).train()
    names = task_losses(family, model_family="videollm")
    batch_t = make_batch(family, 1, dtype)
    batch_v = batch_t if current else make_batch(family, 2, dtype)
    keys = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())

    def task(ps):
        out = functional_call(model, dict(zip(keys, ps)), (batch_t, names))
        return torch.stack([out[n] for n in names])

    def val(ps):
        return functional_call(model, dict(zip(keys, ps)), (batch_v, names[:1]))[names[0]]

    torch.manual_seed(5)
    net = MetaLossTransformer(len(names), f_dim=8, h1=4, h2=8, heads=2).to(dtype).eval()
    return net, task, val, params


def _flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


@pytest.mark.parametrize("family,current", [("captioning", False), ("captioning", True),
                                            ("multiple_choice", False)])
def test_hypergradient_estimators_match_double_backward(family, current, one_thread):
    net, task, val, params = problem(family, torch.float64, current)
    with sdpa_kernel(SDPBackend.MATH):
        ref = _flat(hypergradient(net, task, val, params, "double_backward"))
        jvp = _flat(hypergradient(net, task, val, params, "jvp"))
    assert ref.norm() > 0
    assert float((jvp - ref).norm() / ref.norm()) <= 1e-8
    fd = _flat(hypergradient(net, task, val, params, "finite_difference", fd_eps=1e-4))
    assert float((fd - ref).norm() / ref.norm()) <= 1e-3
    if current:  # the pipeline's default: v and L(W) from the training step itself, one-sided
        losses = task(params)
        v = torch.autograd.grad(val(params), params, allow_unused=True)
        v = [torch.zeros_like(p) if g is None else g for p, g in zip(params, v)]
        one_sided = _flat(hypergradient(net, task, None, params, "finite_difference", v=v, losses=losses.detach(),
                                        fd_eps=1e-4))
        assert float((one_sided - ref).norm() / ref.norm()) <= 1e-2


# ------------------------------------------------------------------------------------------ FSDP2
def _fsdp_worker(rank: int, world: int, init_file: str, out: dict):
    from meltr.train.parallel import wrap

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = wrap(tiny().train(), torch.device("cpu"), "fsdp")
        params = list(model.parameters())
        assert all(type(p).__name__ == "DTensor" for p in params)  # really sharded
        names = task_losses("captioning", model_family="videollm")
        batch_t, batch_v = make_batch("captioning", 10 + rank), make_batch("captioning", 20 + rank)  # its half
        torch.manual_seed(5)
        net = MetaLossTransformer(len(names), f_dim=8, h1=4, h2=8, heads=2).eval()

        def task(_):
            out = model(batch_t, names)
            return torch.stack([out[n] for n in names])

        def val(_):
            return model(batch_v, names[:1])[names[0]]

        got = hypergradient(net, task, val, params, "finite_difference", inplace=True, fd_eps=3e-4)
        out[rank] = _flat(got)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp2_meta_step_matches_one_process(tmp_path):
    """Two gloo ranks, the tiny VideoLLM sharded by train.parallel.wrap(fsdp) one decoder layer per unit, each
    rank with its half of the batch: the finite-difference meta step gives the one-process value, the official
    double_backward of the same losses (the mean over the halves)."""
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_fsdp_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)

    model = tiny().train()
    names = task_losses("captioning", model_family="videollm")
    keys, params = [n for n, _ in model.named_parameters()], list(model.parameters())
    halves_t = [make_batch("captioning", 10 + r) for r in range(2)]
    halves_v = [make_batch("captioning", 20 + r) for r in range(2)]

    def call(ps, batch, which):
        return functional_call(model, dict(zip(keys, ps)), (batch, which))

    def task(ps):
        return torch.stack([torch.stack([call(ps, b, names)[n] for n in names]) for b in halves_t]).mean(0)

    def val(ps):
        return torch.stack([call(ps, b, names[:1])[names[0]] for b in halves_v]).mean()

    torch.manual_seed(5)
    net = MetaLossTransformer(len(names), f_dim=8, h1=4, h2=8, heads=2).eval()
    with sdpa_kernel(SDPBackend.MATH):
        ref = _flat(hypergradient(net, task, val, params, "double_backward"))
    assert torch.equal(out[0], out[1])  # one value on every rank
    assert float((out[0] - ref).norm() / ref.norm()) <= 1e-2


# ------------------------------------------------------------------------------------------ the pipeline
@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    """Tiny synthetic MSRVTT and TGIF-QA, prepared per task, with feature stores: (dataset, task) -> paths."""
    from meltr.cli import main

    root = tmp_path_factory.mktemp("vllm")
    sizes = {"msrvtt": ["--n-train", "8", "--n-test", "4", "--seconds", "2", "--size", "32",
                        "--captions-per-video", "2"],
             "tgifqa": ["--n-train", "8", "--n-test", "4", "--size", "32"]}
    cells = {("msrvtt", "retrieval"), ("msrvtt", "captioning"), ("tgifqa", "action"), ("tgifqa", "frameqa"),
             ("tgifqa", "count")}
    out = {}
    for dataset, args in sizes.items():
        assert main(["synth", "--dataset", dataset, "--out", str(root / dataset), *args]) == 0
        manifests = []
        for d, task in sorted(cells):
            if d != dataset:
                continue
            prep = root / "prep" / dataset / task
            assert main(["prepare", "--dataset", dataset, "--task", task, "--root", str(root / dataset),
                         "--out", str(prep)]) == 0
            manifests += [str(prep / "train.jsonl"), str(prep / "test.jsonl")]
            out[dataset, task] = prep
        assert main(["features", "--manifests", *manifests, "--out", str(root / "feats" / dataset),
                     "--num-frames", "4", "--threads", "1"]) == 0
        for key in out:
            if key[0] == dataset:
                out[key] = (out[key], root / "feats" / dataset)
    return out


@pytest.mark.parametrize("dataset,task", [("msrvtt", "retrieval"), ("msrvtt", "captioning"), ("tgifqa", "action"),
                                          ("tgifqa", "frameqa"), ("tgifqa", "count")])
def test_train_and_evaluate_every_task_family(prepared, dataset, task, tmp_path, one_thread):
    """`meltr train` and `meltr evaluate` on the tiny VideoLLM: MELTR combines its losses, and the metrics
    follow the task's protocol."""
    import json

    from meltr.cli import main

    prep, feats = prepared[dataset, task]
    run = tmp_path / "run"
    assert main(["train", "--dataset", dataset, "--task", task, "--method", "meltr", "--model", "vllm-tiny",
                 "--train-manifest", str(prep / "train.jsonl"), "--features", str(feats), "--out", str(run),
                 "--steps", "4", "--batch-size", "4", "--timing-warmup", "1", "--meltr-k", "2",
                 "--threads", "1"]) == 0
    log = [json.loads(x) for x in (run / "train_log.jsonl").open()]
    assert set(log[0]["weights"]) == set(task_losses(task_family_of(dataset, task), model_family="videollm"))
    assert sum(e["meta"] for e in log) == 2
    assert main(["evaluate", "--checkpoint", str(run / "model.pt"), "--test-manifest", str(prep / "test.jsonl"),
                 "--features", str(feats), "--out", str(run / "metrics.json"), "--beam-size", "2", "--meteor",
                 "false", "--threads", "1"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "vllm-tiny" and metrics["n_test"] > 0
    expected = {"retrieval": "t2v", "captioning": "beam", "multiple_choice": "accuracy", "open_ended": "accuracy",
                "count": "MSE"}[metrics["family"]]
    assert expected in metrics


def task_family_of(dataset: str, task: str) -> str:
    from meltr.data.registry import task_family

    return task_family(dataset, task)


def test_activation_checkpointing_keeps_gradients_and_hypergradients(one_thread):
    """train.checkpointing / scaling.checkpointing recompute activations in the backward: the same gradients,
    and MELTR's official double backward still runs through it, to the same value."""
    batch_t, batch_v = make_batch("captioning", 1), make_batch("captioning", 2)
    names = task_losses("captioning", model_family="videollm")
    grads, hypergrads = [], []
    for checkpointing in (False, True):
        model = build_model("vllm-tiny", D, load_tokenizer().vocab_size, 32, T, 0, checkpointing=checkpointing)
        model.train()
        assert model.lm.is_activation_checkpointing == checkpointing
        params = list(model.parameters())
        torch.stack(list(model(batch_t, names).values())).sum().backward()
        grads.append(_flat([torch.zeros_like(p) if p.grad is None else p.grad for p in params]))
        torch.manual_seed(5)
        net = MetaLossTransformer(len(names), f_dim=8, h1=4, h2=8, heads=2).eval()
        with sdpa_kernel(SDPBackend.MATH):
            hypergrads.append(_flat(hypergradient(
                net, lambda _: torch.stack([model(batch_t, names)[n] for n in names]),
                lambda _: model(batch_v, names[:1])[names[0]], params, "double_backward")))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    assert float((hypergrads[0] - hypergrads[1]).norm() / hypergrads[0].norm()) <= 1e-4
