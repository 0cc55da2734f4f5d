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
    cmfm     conditioned masked frame modelling, NCE against the batch's frame features
    decoder  caption generation, teacher forced, from the cross encoding of masked text and video

Model code is for one device; precision and parallelism are applied by the trainer.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

from .presets import ModelPreset

LOSS_NAMES = ("joint", "align", "cmlm", "cmfm", "decoder")
PRIMARY = {"retrieval": "align", "captioning": "decoder"}
_MASKED = {"cmlm", "cmfm", "decoder"}  # losses computed from the masked-input cross encoding


def _bert_config(p: ModelPreset, layers: int, vocab: int, positions: int, **extra) -> BertConfig:
    return BertConfig(
        vocab_size=vocab, hidden_size=p.hidden, num_hidden_layers=layers, num_attention_heads=p.heads,
        intermediate_size=p.intermediate, max_position_embeddings=positions, type_vocab_size=2,
        hidden_dropout_prob=p.dropout, attention_probs_dropout_prob=p.dropout, pad_token_id=0, **extra,
    )


class VideoLanguageModel(nn.Module):
    def __init__(self, preset: ModelPreset, feature_dim: int, vocab_size: int, max_words: int = 32,
                 max_frames: int = 32, margin: float = 0.1):
        super().__init__()
        self.preset, self.feature_dim, self.margin = preset, feature_dim, margin
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
        self.logit_scale = nn.Parameter(torch.tensor(math.log(20.0)))  # CLIP-style learned temperature
        self.mfm_head = nn.Linear(h, feature_dim)

    # ---------------------------------------------------------------- encoders
    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text(input_ids=ids, attention_mask=mask).last_hidden_state

    def encode_video(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.video(inputs_embeds=self.video_in(video), attention_mask=mask).last_hidden_state

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
        unknown = set(names) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}; expected names from {LOSS_NAMES}")
        out: dict[str, torch.Tensor] = {}
        tm, vm = batch["text_mask"], batch["video_mask"]
        if {"joint", "align"} & set(names):
            text_h = self.encode_text(batch["text_ids"], tm)
            video_h = self.encode_video(batch["video"], vm)
            if "joint" in names:
                out["joint"] = self._joint_loss(text_h, video_h, vm)
            if "align" in names:
                scores = self.pair_scores(text_h, tm, video_h, vm)
                target = torch.arange(scores.shape[0], device=scores.device)
                out["align"] = (F.cross_entropy(scores, target) + F.cross_entropy(scores.t(), target)) / 2
        if _MASKED & set(names):
            text_m = self.encode_text(batch["mlm_ids"], tm)
            video_m = self.encode_video(batch["mfm_video"], vm)
            cross = self.encode_cross(text_m, tm, video_m, vm)
            n_text = text_m.shape[1]
            if "cmlm" in names:
                labels = batch["mlm_labels"]
                picked = labels != -100  # the vocabulary projection only where a word was masked
                out["cmlm"] = _masked_ce(self.lm_logits(cross[:, :n_text][picked]), labels[picked])
            if "cmfm" in names:
                out["cmfm"] = self._cmfm_loss(cross[:, n_text:], batch)
            if "decoder" in names:
                dec = self.decoder(input_ids=batch["dec_ids"], attention_mask=batch["dec_mask"],
                                   encoder_hidden_states=cross,
                                   encoder_attention_mask=torch.cat([tm, vm], 1)).last_hidden_state
                out["decoder"] = _masked_ce(self.lm_logits(dec), batch["dec_labels"])
        return {n: out[n] for n in names}

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
        target = batch["video"][masked]  # (K, D): the original features of the masked frames
        logits = pred @ target.t()  # NCE: each prediction against every masked frame in the batch
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


def _masked_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    flat = labels.reshape(-1)
    if not (flat != -100).any():
        return logits.sum() * 0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat, ignore_index=-100)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
