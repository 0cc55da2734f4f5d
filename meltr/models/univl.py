"""A UniVL-style video-language model built from transformers parts, with UniVL's losses.

    text encoder   BertModel over WordPiece tokens (random init, or MiniLM-L6 weights)
    video encoder  Linear(feature -> hidden) + BertModel over frame features (inputs_embeds)
    cross encoder  BertModel over [text ; video], token type 0 for text and 1 for video
    decoder        BertModel (causal, cross-attending to the cross encoder), LM head tied to the
                   text word embeddings

Losses (names as in meltr-official.md §3, UniVL's order):
    joint    max-margin ranking on the unimodal text/video embeddings
    align    symmetric cross-entropy over the scores of all B x B text-video pairs (the primary loss
             for retrieval); a pair's score is the cross encoder's match logit plus the scaled cosine of
             the unimodal embeddings. The cosine term is ours: UniVL starts from pretrained encoders,
             and from random init a cross-encoder-only score learns far too slowly for a CPU budget.
    cmlm     conditioned masked language modelling through the cross encoder
    cmfm     conditioned masked frame modelling, NCE against the batch's frame features (standardised),
             with dot products scaled by 1/sqrt(feature dim)
    m_joint, m_align   joint and align on the masked text and video (MELTR-UniVL's extra losses)
    decoder  caption generation, teacher forced, from the cross encoding of the context text (a
             transcript or subtitles; empty where a dataset has none) and the video: what captioning
             decodes from at test time
    m_decoder  the same from the cross encoding of the masked caption and masked video (UniVL pre-training)

Question-answering heads on [option ; question ; subtitles] and the clip (Violet's mc/oe), read through `fuse`:
    mc       multiple choice: one logit per option, cross-entropy over the options
    oe       open-ended: a classifier over the training answers
    count    TGIF Count: regression, MSE on the unrounded output

Model code is for one device; precision and parallelism are applied by the trainer.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

from .decoding import beam_search
from .losses import ALL_LOSSES, LOSS_NAMES
from .presets import ModelPreset
from .standardise import StandardisedFeatures

_MASKED_CROSS = {"cmlm", "cmfm", "m_decoder"}  # losses computed from the masked-input cross encoding


def _bert_config(p: ModelPreset, layers: int, vocab: int, positions: int, **extra) -> BertConfig:
    return BertConfig(
        vocab_size=vocab, hidden_size=p.hidden, num_hidden_layers=layers, num_attention_heads=p.heads,
        intermediate_size=p.intermediate, max_position_embeddings=positions, type_vocab_size=2,
        hidden_dropout_prob=p.dropout, attention_probs_dropout_prob=p.dropout, pad_token_id=0, **extra,
    )


class VideoLanguageModel(StandardisedFeatures, nn.Module):
    family = "univl"
    # The Linear layers inside every BertModel (LoRA targets: attention projections and the feed-forward pair),
    # the task heads (new, so they train in full under LoRA) and the blocks FSDP2 shards one by one.
    lora_targets = ["query", "key", "value", "dense"]
    heads = ("align_head", "logit_scale", "mfm_head", "mc_head", "oe_head", "count_head", "lm_transform", "lm_bias")
    block_types = ("BertLayer",)

    def __init__(self, preset: ModelPreset, feature_dim: int, vocab_size: int, max_words: int = 32,
                 max_frames: int = 32, margin: float = 0.1, num_answers: int = 1):
        super().__init__()
        self.preset, self.feature_dim, self.margin = preset, feature_dim, margin
        self.num_answers = num_answers
        self.max_words, self.max_frames = max_words, max_frames
        if preset.text == "minilm":
            from .tokenizer import minilm_dir

            self.text = BertModel.from_pretrained(minilm_dir(), add_pooling_layer=False)
            if self.text.config.hidden_size != preset.hidden:
                raise ValueError(f"preset {preset.name}: hidden must be {self.text.config.hidden_size} for minilm")
        else:
            self.text = BertModel(_bert_config(preset, preset.text_layers, vocab_size, max(max_words, 64)),
                                  add_pooling_layer=False)
        h = preset.hidden
        self.init_feature_stats(feature_dim)  # standardise.py: set from the training clips, saved with the weights
        self.video_in = nn.Linear(feature_dim, h)
        self.video = BertModel(_bert_config(preset, preset.video_layers, 1, max_frames), add_pooling_layer=False)
        self.cross = BertModel(_bert_config(preset, preset.cross_layers, 1, max_words + max_frames),
                               add_pooling_layer=False)
        self.decoder = BertModel(
            _bert_config(preset, preset.decoder_layers, vocab_size, max(max_words, 64), is_decoder=True,
                         add_cross_attention=True),
            add_pooling_layer=False,
        )
        # UniVL ties the decoder's and the MLM head's vocabulary to the text word embeddings. Share the
        # Parameter, not the module: torch.func.functional_call (MELTR's jvp and finite-difference meta
        # steps) restores a module seen under two paths wrongly and leaves a detached tensor behind.
        self.decoder.embeddings.word_embeddings.weight = self.text.embeddings.word_embeddings.weight
        self.lm_transform = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.LayerNorm(h))
        self.lm_bias = nn.Parameter(torch.zeros(vocab_size))
        self.align_head = nn.Linear(h, 1)
        # CLIP-style learned temperature; shape (1,), not a scalar, which FSDP2 cannot shard
        self.logit_scale = nn.Parameter(torch.tensor([math.log(20.0)]))
        self.mfm_head = nn.Linear(h, feature_dim)
        self.mc_head = nn.Linear(h, 1)
        self.oe_head = nn.Linear(h, num_answers)
        self.count_head = nn.Linear(h, 1)

    # ---------------------------------------------------------------- encoders
    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text(input_ids=ids, attention_mask=mask).last_hidden_state

    def encode_video(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.video(inputs_embeds=self.video_in(self.standardise(video)), attention_mask=mask).last_hidden_state

    def encode_cross(self, text_h, text_mask, video_h, video_mask) -> torch.Tensor:
        embeds = torch.cat([text_h, video_h], dim=1)
        mask = torch.cat([text_mask, video_mask], dim=1)
        types = torch.cat([torch.zeros_like(text_mask), torch.ones_like(video_mask)], dim=1).long()
        return self.cross(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types).last_hidden_state

    def lm_logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.lm_transform(h), self.text.embeddings.word_embeddings.weight, self.lm_bias)

    def unimodal(self, text_h, video_h, video_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised text ([CLS]) and video (masked mean over frames) embeddings."""
        m = video_mask.unsqueeze(-1).to(video_h.dtype)
        video = (video_h * m).sum(1) / m.sum(1).clamp(min=1)
        return F.normalize(text_h[:, 0], dim=-1), F.normalize(video, dim=-1)

    def pair_scores(self, text_h, text_mask, video_h, video_mask) -> torch.Tensor:
        """Score of every text against every video: (n_text, n_video)."""
        t, v = self.unimodal(text_h, video_h, video_mask)
        cosine = self.logit_scale.clamp(max=math.log(100.0)).exp() * (t @ v.t())
        nt, nv = text_h.shape[0], video_h.shape[0]
        th = text_h.repeat_interleave(nv, 0)
        tm = text_mask.repeat_interleave(nv, 0)
        vh = video_h.repeat(nt, 1, 1)
        vm = video_mask.repeat(nt, 1)
        cross = self.encode_cross(th, tm, vh, vm)
        return self.align_head(cross[:, 0]).view(nt, nv) + cosine

    # ---------------------------------------------------------------- losses
    def forward(self, batch: dict, names: tuple[str, ...] | list[str] = LOSS_NAMES) -> dict[str, torch.Tensor]:
        """Compute only the named losses (a method that needs only `align` pays only for `align`)."""
        unknown = set(names) - set(ALL_LOSSES)
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}; expected names from {ALL_LOSSES}")
        want = set(names)
        out: dict[str, torch.Tensor] = {}
        tm, vm = batch["text_mask"], batch["video_mask"]
        video_h = self.encode_video(batch["video"], vm) if want - {"m_joint", "m_align"} - _MASKED_CROSS else None
        if {"joint", "align"} & want:
            text_h = self.encode_text(batch["text_ids"], tm)
            out.update(self._pair_losses(text_h, tm, video_h, vm, want, prefix=""))
        if ({"m_joint", "m_align"} | _MASKED_CROSS) & want:
            text_m = self.encode_text(batch["mlm_ids"], tm)
            video_m = self.encode_video(batch["mfm_video"], vm)
            out.update(self._pair_losses(text_m, tm, video_m, vm, want, prefix="m_"))
            if _MASKED_CROSS & want:
                cross = self.encode_cross(text_m, tm, video_m, vm)
                n_text = text_m.shape[1]
                if "cmlm" in want:
                    labels = batch["mlm_labels"]
                    picked = labels != -100  # the vocabulary projection only where a word was masked
                    out["cmlm"] = _masked_ce(self.lm_logits(cross[:, :n_text][picked]), labels[picked])
                if "cmfm" in want:
                    out["cmfm"] = self._cmfm_loss(cross[:, n_text:], batch)
                if "m_decoder" in want:
                    out["m_decoder"] = self._decoder_loss(cross, torch.cat([tm, vm], 1), batch)
        if "decoder" in want:
            cross, cross_mask = self.encode_context(batch["ctx_ids"], batch["ctx_mask"], video_h, vm)
            out["decoder"] = self._decoder_loss(cross, cross_mask, batch)
        if "mc" in want:
            out["mc"] = F.cross_entropy(self.option_logits(batch["qa_ids"], batch["qa_mask"], video_h, vm),
                                        batch["answer"])
        if {"oe", "count"} & want:
            pooled = self.question_pool(batch["q_ids"], batch["q_mask"], video_h, vm)
            if "oe" in want:
                out["oe"] = F.cross_entropy(self.oe_head(pooled), batch["label"], ignore_index=-100)
            if "count" in want:
                out["count"] = F.mse_loss(self.count_head(pooled).squeeze(-1), batch["target"])
        return {n: out[n] for n in names}

    def _pair_losses(self, text_h, tm, video_h, vm, want: set, prefix: str) -> dict[str, torch.Tensor]:
        out = {}
        if prefix + "joint" in want:
            out[prefix + "joint"] = self._joint_loss(text_h, video_h, vm)
        if prefix + "align" in want:
            scores = self.pair_scores(text_h, tm, video_h, vm)
            target = torch.arange(scores.shape[0], device=scores.device)
            out[prefix + "align"] = (F.cross_entropy(scores, target) + F.cross_entropy(scores.t(), target)) / 2
        return out

    def _decoder_loss(self, cross, cross_mask, batch) -> torch.Tensor:
        dec = self.decoder(input_ids=batch["dec_ids"], attention_mask=batch["dec_mask"],
                           encoder_hidden_states=cross, encoder_attention_mask=cross_mask).last_hidden_state
        return _masked_ce(self.lm_logits(dec), batch["dec_labels"])

    # ---------------------------------------------------------------- task heads
    def encode_context(self, ctx_ids, ctx_mask, video_h, video_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """What the caption decoder attends to: the cross encoding of [context text ; video] and its mask."""
        ctx_h = self.encode_text(ctx_ids, ctx_mask)
        return self.encode_cross(ctx_h, ctx_mask, video_h, video_mask), torch.cat([ctx_mask, video_mask], 1)

    def option_logits(self, qa_ids, qa_mask, video_h, video_mask) -> torch.Tensor:
        """(B, O) logits: each "option [SEP] question" scored with the clip."""
        b, o, n = qa_ids.shape
        text_h = self.encode_text(qa_ids.reshape(b * o, n), qa_mask.reshape(b * o, n))
        vh, vm = video_h.repeat_interleave(o, 0), video_mask.repeat_interleave(o, 0)
        fused = self.fuse(text_h, qa_mask.reshape(b * o, n), vh, vm)
        # plus align's scaled cosine: an option is scored like a caption against the clip
        t, v = self.unimodal(text_h, vh, vm)
        cosine = self.logit_scale.clamp(max=math.log(100.0)).exp() * (t * v).sum(-1)
        return (self.mc_head(fused).squeeze(-1) + cosine).view(b, o)

    def question_pool(self, q_ids, q_mask, video_h, video_mask) -> torch.Tensor:
        return self.fuse(self.encode_text(q_ids, q_mask), q_mask, video_h, video_mask)

    def fuse(self, text_h, text_mask, video_h, video_mask) -> torch.Tensor:
        """What the QA heads read: the cross encoder's [CLS] plus the product of the unimodal text [CLS] and
        mean video. The product term is ours, for the reason of align's cosine: from random init the cross
        encoder's [CLS] barely depends on its input, and the heads would not learn in a CPU budget."""
        m = video_mask.unsqueeze(-1).to(video_h.dtype)
        video = (video_h * m).sum(1) / m.sum(1).clamp(min=1)
        return self.encode_cross(text_h, text_mask, video_h, video_mask)[:, 0] + text_h[:, 0] * video

    def _joint_loss(self, text_h, video_h, video_mask) -> torch.Tensor:
        t, v = self.unimodal(text_h, video_h, video_mask)
        sim = t @ v.t()
        pos = sim.diag()
        off = ~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
        hinge_t2v = F.relu(self.margin + sim - pos[:, None])[off]
        hinge_v2t = F.relu(self.margin + sim - pos[None, :])[off]
        if hinge_t2v.numel() == 0:  # batch of one: no negatives
            return sim.sum() * 0
        return (hinge_t2v.mean() + hinge_v2t.mean()) / 2

    def _cmfm_loss(self, cross_video: torch.Tensor, batch: dict) -> torch.Tensor:
        masked = batch["mfm_mask"]  # (B, T) bool: frames replaced by zeros in the input
        if not masked.any():
            return cross_video.sum() * 0
        pred = self.mfm_head(cross_video[masked])  # (K, D)
        # (K, D): the masked frames' features as the model reads them; raw, their large shared offset dominates
        # the dot products and the NCE loss grows without bound (cmfm ~100+ instead of ~3)
        target = self.standardise(batch["video"][masked])
        # NCE: each prediction against every masked frame in the batch. Scaled by 1/sqrt(D), as attention
        # scales its dot products: UniVL's unscaled logits suit its small S3D features, but standardised
        # features have norm ~sqrt(D) (D = 1920 for stacked TGIF frames), and unscaled the cmfm gradient into
        # the shared encoders is ~40x the answer loss's, which then barely moves them under multitask.
        logits = pred @ target.t() / math.sqrt(target.shape[-1])
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def retrieval_scores(self, text_ids, text_mask, video, video_mask, chunk: int = 16) -> torch.Tensor:
        """Similarity matrix (n_text, n_video) from the cross encoder, as UniVL scores retrieval."""
        text_h = self.encode_text(text_ids, text_mask)
        video_h = self.encode_video(video, video_mask)
        rows = [self.pair_scores(text_h[i:i + chunk], text_mask[i:i + chunk], video_h, video_mask)
                for i in range(0, text_h.shape[0], chunk)]
        return torch.cat(rows, 0)

    # The evaluation interface both model families answer (evaluate.py calls only these): `task` holds the
    # tensors of data/samplers.task_tensors for the records scored.
    @torch.no_grad()
    def caption_ids(self, video, video_mask, bos_id: int, eos_id: int, max_len: int, beam_size: int = 1):
        """Caption token ids per clip, decoded from the video with an empty context text ([CLS][SEP])."""
        ctx = torch.tensor([[bos_id, eos_id]], device=video.device).expand(video.shape[0], -1)
        return self.generate(video, video_mask, ctx, torch.ones_like(ctx), bos_id, eos_id, max_len, beam_size)

    @torch.no_grad()
    def option_scores(self, task: dict, video, video_mask) -> torch.Tensor:
        return self.option_logits(task["qa_ids"], task["qa_mask"], self.encode_video(video, video_mask), video_mask)

    @torch.no_grad()
    def answer_texts(self, task: dict, video, video_mask, answers: list[str], tokenizer) -> list[str]:
        """Open-ended answers: the classifier's most likely training answer."""
        pooled = self.question_pool(task["q_ids"], task["q_mask"], self.encode_video(video, video_mask), video_mask)
        return [answers[i] for i in self.oe_head(pooled).argmax(1).tolist()]

    @torch.no_grad()
    def count_predictions(self, task: dict, video, video_mask) -> torch.Tensor:
        pooled = self.question_pool(task["q_ids"], task["q_mask"], self.encode_video(video, video_mask), video_mask)
        return self.count_head(pooled).squeeze(-1)

    @torch.no_grad()
    def generate(self, video, video_mask, ctx_ids, ctx_mask, bos_id: int, eos_id: int, max_len: int,
                 beam_size: int = 1) -> list[list[int]]:
        """Caption token ids per clip (without [CLS]/[SEP]), at least one token long: greedy when beam_size is
        1, else beam search. Finished beams are ranked by their mean log-probability per token ([SEP]
        included): summed log-probabilities would favour ever shorter captions, down to the empty one."""
        video_h = self.encode_video(video, video_mask)
        cross, cross_mask = self.encode_context(ctx_ids, ctx_mask, video_h, video_mask)
        if beam_size == 1:
            return self._greedy(cross, cross_mask, bos_id, eos_id, max_len)
        return [self._beam(cross[i:i + 1], cross_mask[i:i + 1], bos_id, eos_id, max_len, beam_size)
                for i in range(cross.shape[0])]

    def _next_logprobs(self, seqs: torch.Tensor, cross, cross_mask, eos_id: int | None = None) -> torch.Tensor:
        """Log-probabilities of the token after each sequence (cross: one clip, or one per sequence). With
        eos_id, [SEP] is barred right after [CLS]: no empty caption."""
        n = seqs.shape[0]
        dec = self.decoder(input_ids=seqs, attention_mask=torch.ones_like(seqs),
                           encoder_hidden_states=cross.expand(n, -1, -1),
                           encoder_attention_mask=cross_mask.expand(n, -1)).last_hidden_state
        logp = F.log_softmax(self.lm_logits(dec[:, -1]).float(), dim=-1)
        if eos_id is not None and seqs.shape[1] == 1:
            logp[:, eos_id] = float("-inf")
        return logp

    def _greedy(self, cross, cross_mask, bos_id, eos_id, max_len) -> list[list[int]]:
        """All clips at once: the most likely next token until [SEP] (or max_len)."""
        seqs = torch.full((cross.shape[0], 1), bos_id, dtype=torch.long, device=cross.device)
        done = torch.zeros(cross.shape[0], dtype=torch.bool, device=cross.device)
        for _ in range(max_len):
            nxt = self._next_logprobs(seqs, cross, cross_mask, eos_id).argmax(-1).masked_fill(done, eos_id)
            seqs = torch.cat([seqs, nxt[:, None]], 1)
            done |= nxt == eos_id
            if done.all():
                break
        out = []
        for row in seqs[:, 1:].tolist():
            out.append(row[:row.index(eos_id)] if eos_id in row else row)
        return out

    def _beam(self, cross, cross_mask, bos_id, eos_id, max_len, beam_size) -> list[int]:
        prompt = torch.full((1, 1), bos_id, dtype=torch.long, device=cross.device)
        return beam_search(lambda beams: self._next_logprobs(beams, cross, cross_mask, eos_id), prompt, eos_id,
                           max_len, beam_size)


def _masked_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    flat = labels.reshape(-1)
    if not (flat != -100).any():
        return logits.sum() * 0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat, ignore_index=-100)

