"""VideoLanguageModel losses, decoder causality, retrieval scores, and the Batcher's masks.

Everything runs on a tiny random-init model (hidden 16, one layer per tower) and a batch of B=4 random
videos (T=4 frames, D=12 features) with real WordPiece captions.
"""
import math

import pytest
import torch

from meltr.data.batching import Batcher, tokenize
from meltr.models.presets import ModelPreset
from meltr.models.tokenizer import load_tokenizer
from meltr.models.losses import ALL_LOSSES, LOSS_NAMES, PRIMARY, TASK_LOSSES
from meltr.models.univl import VideoLanguageModel

B, T, D, MAX_WORDS = 4, 4, 12, 10
CAPTIONS = [
    "a man is cooking pasta",
    "a dog runs in the park",
    "two people talk",
    "a red car drives fast on a road",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_preset(dropout: float = 0.0) -> ModelPreset:
    return ModelPreset("test", hidden=16, heads=2, text_layers=1, video_layers=1, cross_layers=1,
                       decoder_layers=1, intermediate=32, dropout=dropout)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def tokenized(tok):
    return tokenize(tok, CAPTIONS, MAX_WORDS)


@pytest.fixture(scope="module")
def video():
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(123))


@pytest.fixture
def batch(tok, tokenized, video):
    return Batcher(tok).make(video, tokenized, torch.Generator().manual_seed(0))


@pytest.fixture
def model(tok):
    torch.manual_seed(0)
    return VideoLanguageModel(tiny_preset(), D, len(tok), max_words=MAX_WORDS, max_frames=T)


def grads_by_name(model):
    return {n: p.grad for n, p in model.named_parameters()}


def nonzero(g):
    return g is not None and bool((g != 0).any())


def reached(grads, prefix):
    """Some parameter under `prefix` received a non-zero gradient."""
    hits = [n for n in grads if n == prefix or n.startswith(prefix + ".")]
    assert hits, f"no parameter named {prefix}"
    return any(nonzero(grads[n]) for n in hits)


# ------------------------------------------------------------------------------------------ losses
def test_primary_losses_are_known():
    assert set(PRIMARY.values()) <= set(ALL_LOSSES)
    assert PRIMARY["retrieval"] == "align" and PRIMARY["captioning"] == "decoder"
    for family, names in TASK_LOSSES.items():
        assert PRIMARY[family] in names and set(names) <= set(ALL_LOSSES)
    # MELTR-UniVL's eight, in its order (meltr-official.md §3)
    assert LOSS_NAMES == ("joint", "align", "cmlm", "cmfm", "m_joint", "m_align", "decoder", "m_decoder")


def test_all_losses_are_finite_scalars(model, batch):
    out = model(batch)
    assert tuple(out) == LOSS_NAMES
    for name, loss in out.items():
        assert loss.shape == (), name
        assert torch.isfinite(loss), name
        assert loss.requires_grad, name
    # Cross-entropy losses from random init are far from zero; NCE over >= 4 masked frames is > 0.
    for name in ("align", "cmlm", "cmfm", "decoder"):
        assert out[name].item() > 0.1, name


def test_cmfm_starts_near_chance_with_wide_features(tok, tokenized):
    """The NCE's logits are scaled by 1/sqrt(D): from random init, cmfm over K masked frames starts near its
    chance level log K even for wide standardised features, instead of tens of nats that swamp the other
    losses' gradients under multitask."""
    wide = 1024
    torch.manual_seed(0)
    model = VideoLanguageModel(tiny_preset(), wide, len(tok), max_words=MAX_WORDS, max_frames=T)
    video = torch.randn(B, T, wide, generator=torch.Generator().manual_seed(5))
    batch = Batcher(tok, mask_prob=0.5).make(video, tokenized, torch.Generator().manual_seed(0))
    k = int(batch["mfm_mask"].sum())
    assert k >= 4
    cmfm = model(batch, ["cmfm"])["cmfm"].item()
    assert abs(cmfm - math.log(k)) < 1.5, (cmfm, math.log(k))


# which parameter groups each loss must reach, and which it must not touch
REACH = {
    "joint": (["text.embeddings", "text.encoder", "video_in", "video.encoder"],
              ["cross", "align_head", "logit_scale", "decoder", "lm_transform", "lm_bias", "mfm_head"]),
    "align": (["text.embeddings", "text.encoder", "video_in", "video.encoder", "cross.encoder", "align_head",
               "logit_scale"],
              ["decoder", "lm_transform", "lm_bias", "mfm_head"]),
    "cmlm": (["text.embeddings.word_embeddings", "text.encoder", "video_in", "video.encoder", "cross.encoder",
              "lm_transform", "lm_bias"],
             ["decoder", "align_head", "logit_scale", "mfm_head"]),
    "cmfm": (["text.encoder", "video_in", "video.encoder", "cross.encoder", "mfm_head"],
             ["decoder", "align_head", "logit_scale", "lm_transform", "lm_bias"]),
    "decoder": (["decoder.encoder", "decoder.embeddings.position_embeddings", "lm_transform", "lm_bias",
                 "text.embeddings.word_embeddings", "cross.encoder", "video_in"],
                ["align_head", "logit_scale", "mfm_head"]),
    "m_decoder": (["decoder.encoder", "lm_transform", "lm_bias", "text.encoder", "cross.encoder", "video_in"],
                  ["align_head", "logit_scale", "mfm_head"]),
}
REACH["m_joint"], REACH["m_align"] = REACH["joint"], REACH["align"]


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_each_loss_reaches_its_parameters(model, batch, name):
    out = model(batch, [name])
    assert list(out) == [name]
    out[name].backward()
    grads = grads_by_name(model)
    must, must_not = REACH[name]
    for prefix in must:
        assert reached(grads, prefix), f"{name} does not reach {prefix}"
    for prefix in must_not:
        assert not reached(grads, prefix), f"{name} reaches {prefix}"


def test_decoder_cross_attention_gets_gradient(model, batch):
    model(batch, ["decoder"])["decoder"].backward()
    grads = grads_by_name(model)
    cross_attn = [n for n in grads if n.startswith("decoder.") and "crossattention" in n]
    assert cross_attn, "decoder has no cross-attention parameters"
    assert any(nonzero(grads[n]) for n in cross_attn)


def test_forward_subset_computes_only_that(model, batch):
    calls = {"text": 0, "video": 0, "cross": 0, "decoder": 0}
    for part in calls:
        getattr(model, part).register_forward_hook(lambda *a, part=part: calls.__setitem__(part, calls[part] + 1))
    out = model(batch, ["align"])
    assert list(out) == ["align"]
    # one unmasked text/video encoding; the cross encoder once for the B x B pairs; no masked pass, no decoder
    assert calls == {"text": 1, "video": 1, "cross": 1, "decoder": 0}
    out["align"].backward()
    grads = grads_by_name(model)
    for prefix in ("decoder.encoder", "lm_transform", "lm_bias", "mfm_head"):
        assert not reached(grads, prefix)


def test_forward_subset_values_match_full_forward(model, batch):
    model.eval()
    full = model(batch)
    for name in LOSS_NAMES:
        torch.testing.assert_close(model(batch, [name])[name], full[name], rtol=1e-6, atol=1e-6)
    # order follows the request, not LOSS_NAMES
    pair = model(batch, ["decoder", "align"])
    assert list(pair) == ["decoder", "align"]


def test_masked_variants_see_only_the_masked_inputs(model, batch):
    """m_joint/m_align are joint/align on the masked text and video: equal when nothing is masked."""
    model.eval()
    out = model(batch, ["joint", "align", "m_joint", "m_align"])
    assert not torch.allclose(out["joint"], out["m_joint"]) and not torch.allclose(out["align"], out["m_align"])
    unmasked = dict(batch, mlm_ids=batch["text_ids"], mfm_video=batch["video"])
    same = model(unmasked, ["joint", "align", "m_joint", "m_align"])
    torch.testing.assert_close(same["m_joint"], same["joint"])
    torch.testing.assert_close(same["m_align"], same["align"])


def test_decoder_reads_the_context_not_the_caption(model, batch):
    """decoder (what captioning decodes from) must not see the caption it predicts; m_decoder sees it masked."""
    model.eval()
    base = model(batch, ["decoder"])["decoder"]
    other_text = dict(batch, text_ids=batch["text_ids"].flip(0), mlm_ids=batch["mlm_ids"].flip(0))
    assert torch.equal(model(other_text, ["decoder"])["decoder"], base)
    assert model(other_text, ["m_decoder"])["m_decoder"] != model(batch, ["m_decoder"])["m_decoder"]


def test_masked_losses_only_encode_masked_inputs(model, batch):
    calls = {"text": 0, "decoder": 0}
    for part in calls:
        getattr(model, part).register_forward_hook(lambda *a, part=part: calls.__setitem__(part, calls[part] + 1))
    model(batch, ["cmlm", "cmfm"])
    assert calls == {"text": 1, "decoder": 0}


@pytest.mark.parametrize("names", [["nope"], ["align", "captioning"], ["Align"]])
def test_unknown_loss_names_raise(model, batch, names):
    with pytest.raises(ValueError, match="unknown losses"):
        model(batch, names)


# ------------------------------------------------------------------------------------------ decoder
def decoder_states(model, batch):
    seen = []
    handle = model.decoder.register_forward_hook(lambda mod, args, kwargs, out: seen.append(out.last_hidden_state),
                                                 with_kwargs=True)
    try:
        loss = model(batch, ["decoder"])["decoder"]
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0], loss


def test_decoder_is_causal(model, batch):
    model.eval()
    with torch.no_grad():
        ref, ref_loss = decoder_states(model, batch)
        n = batch["dec_ids"].shape[1]
        assert ref.shape[:2] == (B, n)
        for j in (1, 3, 5):
            changed = dict(batch)
            ids = batch["dec_ids"].clone()
            ids[:, j:] = torch.randint(1000, 2000, ids[:, j:].shape, generator=torch.Generator().manual_seed(j))
            changed["dec_ids"] = ids
            new, new_loss = decoder_states(model, changed)
            # earlier positions see only earlier tokens
            torch.testing.assert_close(new[:, :j], ref[:, :j], rtol=1e-5, atol=1e-6)
            # the changed positions do change (so the check above is not vacuous)
            assert (new[:, j] - ref[:, j]).abs().max() > 1e-3
            assert new_loss != ref_loss


def test_decoder_is_teacher_forced_shift(batch, tokenized):
    ids, mask = tokenized.ids, tokenized.mask
    assert torch.equal(batch["dec_ids"], ids[:, :-1])
    assert torch.equal(batch["dec_mask"], mask[:, :-1])
    expected = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    assert torch.equal(batch["dec_labels"], expected)


# ------------------------------------------------------------------------------------------ retrieval
def test_retrieval_scores_shape_and_pair_scores(model, tokenized, video):
    model.eval()
    n_text = 3
    vm = torch.ones(B, T, dtype=torch.long)
    ids, tm = tokenized.ids[:n_text], tokenized.mask[:n_text]
    scores = model.retrieval_scores(ids, tm, video, vm)
    assert scores.shape == (n_text, B)
    assert not scores.requires_grad
    with torch.no_grad():
        th, vh = model.encode_text(ids, tm), model.encode_video(video, vm)
        ref = model.pair_scores(th, tm, vh, vm)
    torch.testing.assert_close(scores, ref, rtol=1e-5, atol=1e-5)
    # chunking over texts does not change the result
    torch.testing.assert_close(model.retrieval_scores(ids, tm, video, vm, chunk=1), scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.retrieval_scores(ids, tm, video, vm, chunk=2), scores, rtol=1e-5, atol=1e-5)
    # rows differ between texts (the text actually enters the score)
    assert (scores[0] - scores[1]).abs().max() > 1e-4


def test_pair_scores_match_one_pair_at_a_time(model, tokenized, video):
    model.eval()
    vm = torch.ones(B, T, dtype=torch.long)
    with torch.no_grad():
        th = model.encode_text(tokenized.ids, tokenized.mask)
        vh = model.encode_video(video, vm)
        full = model.pair_scores(th, tokenized.mask, vh, vm)
        for i in range(B):
            for j in range(B):
                one = model.pair_scores(th[i:i + 1], tokenized.mask[i:i + 1], vh[j:j + 1], vm[j:j + 1])
                torch.testing.assert_close(one[0, 0], full[i, j], rtol=1e-5, atol=1e-5)


def test_align_loss_is_cross_entropy_of_retrieval_scores(model, batch):
    model.eval()
    scores = model.retrieval_scores(batch["text_ids"], batch["text_mask"], batch["video"], batch["video_mask"])
    target = torch.arange(B)
    expected = (torch.nn.functional.cross_entropy(scores, target)
                + torch.nn.functional.cross_entropy(scores.t(), target)) / 2
    with torch.no_grad():
        got = model(batch, ["align"])["align"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ batches
def test_batches_are_deterministic_per_seed(tok, tokenized, video):
    batcher = Batcher(tok)
    a = batcher.make(video, tokenized, torch.Generator().manual_seed(7))
    b = batcher.make(video, tokenized, torch.Generator().manual_seed(7))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    c = batcher.make(video, tokenized, torch.Generator().manual_seed(8))
    d = batcher.make(video, tokenized, torch.Generator().manual_seed(9))
    differs = [not torch.equal(x["mlm_labels"], a["mlm_labels"]) or not torch.equal(x["mfm_mask"], a["mfm_mask"])
               for x in (c, d)]
    assert any(differs)


def test_batch_does_not_touch_global_rng(tok, tokenized, video):
    state = torch.get_rng_state()
    Batcher(tok).make(video, tokenized, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("mask_prob", [0.0, 0.15, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_masks(tok, tokenized, video, mask_prob, seed):
    batch = Batcher(tok, mask_prob=mask_prob).make(video, tokenized, torch.Generator().manual_seed(seed))
    ids, mask = tokenized.ids, tokenized.mask
    labels, mlm_ids = batch["mlm_labels"], batch["mlm_ids"]
    chosen = labels != -100
    assert chosen.any(1).all(), "every caption must mask at least one word"
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    assert not (chosen & special).any(), "special tokens are never masked"
    assert not (chosen & (mask == 0)).any(), "padding is never masked"
    assert torch.equal(labels[chosen], ids[chosen])
    assert (mlm_ids[chosen] == tok.mask_token_id).all()
    assert torch.equal(mlm_ids[~chosen], ids[~chosen])
    if mask_prob == 0.0:
        assert (chosen.sum(1) == 1).all()
    if mask_prob == 1.0:
        assert torch.equal(chosen, (mask == 1) & ~special)


@pytest.mark.parametrize("mask_prob", [0.0, 0.15, 1.0])
def test_frame_masks(tok, tokenized, video, mask_prob):
    batch = Batcher(tok, mask_prob=mask_prob).make(video, tokenized, torch.Generator().manual_seed(3))
    m = batch["mfm_mask"]
    assert m.dtype == torch.bool and m.shape == (B, T)
    assert m.any(1).all(), "every video masks at least one frame"
    assert (batch["mfm_video"][m] == 0).all()
    assert torch.equal(batch["mfm_video"][~m], video[~m])
    assert torch.equal(batch["video"], video)
    assert torch.equal(batch["video_mask"], torch.ones(B, T, dtype=torch.long))
    if mask_prob == 0.0:
        assert (m.sum(1) == 1).all()
    if mask_prob == 1.0:
        assert m.all()


def test_batch_does_not_modify_inputs(tok, tokenized, video):
    ids, tmask, vid = tokenized.ids.clone(), tokenized.mask.clone(), video.clone()
    Batcher(tok, mask_prob=1.0).make(video, tokenized, torch.Generator().manual_seed(0))
    assert torch.equal(tokenized.ids, ids) and torch.equal(tokenized.mask, tmask) and torch.equal(video, vid)


# ------------------------------------------------------------------------------------------ QA heads and decoding
def qa_records(family):
    recs = []
    for i, (colour, motion) in enumerate([("red", "up"), ("blue", "down"), ("green", "left"), ("white", "right")]):
        rec = {"id": str(i), "video_id": f"v{i}", "video": f"v{i}.gif", "start": None, "end": None, "fps": None,
               "split": "train", "question": f"what does the {colour} shape do ?"}
        if family == "multiple_choice":
            rec.update(options=["up", "down", "left", "right", "stay"], answer=i, subtitles="(Ann:) look")
        elif family == "open_ended":
            rec.update(answer=motion)
        else:
            rec.update(answer=i + 1)
        recs.append(rec)
    return recs


@pytest.mark.parametrize("family, loss", [("multiple_choice", "mc"), ("open_ended", "oe"), ("count", "count")])
def test_qa_heads_train(tok, video, family, loss):
    """Each QA head gives a finite loss that reaches its head and the cross encoder, and a few steps on four
    clips lower it (the head is wired to the labels, not to noise)."""
    from meltr.data.samplers import TaskSampler, answer_vocabulary

    recs = qa_records(family)
    answers = answer_vocabulary(recs) if family == "open_ended" else []
    sampler = TaskSampler(recs, tok, family, 24, 4, 0, answers)  # room for option, question and subtitles
    torch.manual_seed(0)
    model = VideoLanguageModel(tiny_preset(), D, len(tok), max_words=24, max_frames=T,
                               num_answers=max(1, len(answers)))
    batch = sampler.batch(0, video.numpy(), Batcher(tok), torch.Generator().manual_seed(0))
    names = list(TASK_LOSSES[family])
    out = model(batch, names)
    assert list(out) == names and all(torch.isfinite(v) for v in out.values())
    out[loss].backward()
    grads = grads_by_name(model)
    head = {"mc": "mc_head", "oe": "oe_head", "count": "count_head"}[loss]
    assert reached(grads, head) and reached(grads, "cross.encoder")
    assert not reached(grads, "decoder.encoder")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        opt.zero_grad()
        value = model(batch, [loss])[loss]
        first = float(value.detach()) if first is None else first
        value.backward()
        opt.step()
    assert float(value.detach()) < 0.5 * first


def test_generate_greedy_and_beam(model, batch, tok):
    """Decoding stops at [SEP] and never returns an empty caption; beam search finds a caption whose mean
    log-probability per token is at least greedy's (the quantity it ranks by)."""
    model.eval()
    v, vm = batch["video"], batch["video_mask"]
    ctx = Batcher(tok).empty(v.shape[0])
    greedy = model.generate(v, vm, ctx.ids, ctx.mask, tok.cls_token_id, tok.sep_token_id, 6, beam_size=1)
    assert len(greedy) == v.shape[0] and all(1 <= len(g) <= 6 for g in greedy)
    assert all(tok.sep_token_id not in g and tok.cls_token_id not in g for g in greedy)
    cross, cmask = model.encode_context(ctx.ids, ctx.mask, model.encode_video(v, vm), vm)
    # the batched greedy loop follows the per-step argmax of each clip alone
    for i in range(v.shape[0]):
        ids = [tok.cls_token_id]
        for _ in range(6):
            lp = model._next_logprobs(torch.tensor([ids]), cross[i:i + 1], cmask[i:i + 1])[0]
            if len(ids) == 1:
                lp[tok.sep_token_id] = float("-inf")
            nxt = int(lp.argmax())
            if nxt == tok.sep_token_id:
                break
            ids.append(nxt)
        assert greedy[i] == ids[1:]

    def mean_logprob(i, seq):
        ids = [tok.cls_token_id] + seq
        steps = len(ids) if len(seq) < 6 else len(ids) - 1  # a finished caption also scores its [SEP]
        total = 0.0
        for t in range(1, steps + 1):
            lp = model._next_logprobs(torch.tensor([ids[:t]]), cross[i:i + 1], cmask[i:i + 1])[0]
            total += float(lp[ids[t]] if t < len(ids) else lp[tok.sep_token_id])
        return total / steps

    beam = model.generate(v, vm, ctx.ids, ctx.mask, tok.cls_token_id, tok.sep_token_id, 6, beam_size=4)
    assert all(len(b) >= 1 for b in beam)
    for i in range(v.shape[0]):
        if len(greedy[i]) < 6 and len(beam[i]) < 6:  # both finished
            assert mean_logprob(i, beam[i]) >= mean_logprob(i, greedy[i]) - 1e-4


def test_feature_stats_standardise_video_input_and_travel_with_the_weights():
    torch.manual_seed(0)
    model = VideoLanguageModel(tiny_preset(), D, 100, MAX_WORDS).eval()
    # a large shared offset plus a small clip-dependent part, like random-init backbone features
    video = 50.0 + 0.1 * torch.randn(B, T, D)
    model.set_feature_stats(video)
    mask = torch.ones(B, T, dtype=torch.long)
    seen = []
    hook = model.video_in.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    model.encode_video(video, mask)
    hook.remove()
    x = seen[0].reshape(-1, D)
    assert torch.allclose(x.mean(0), torch.zeros(D), atol=1e-3)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(D), atol=1e-3)
    clone = VideoLanguageModel(tiny_preset(), D, 100, MAX_WORDS)
    clone.load_state_dict(model.state_dict())  # the statistics are buffers: saved and loaded with the model
    assert torch.equal(clone.feature_mean, model.feature_mean) and torch.equal(clone.feature_std, model.feature_std)
