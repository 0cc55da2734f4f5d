"""A VideoLLM: a decoder-only causal language model from transformers (Llama) that reads projected frame
features as a prefix of visual tokens before the text, as LLaVA, Video-LLaVA, VideoChat and PaLM-E do.

    projector   per visual token: Linear(feature -> hidden), GELU, Linear(hidden -> hidden) (LLaVA-1.5's
                MLP), after optional average pooling of `visual_pool` consecutive tokens (fewer per frame)
    language    LlamaModel: RMSNorm, rotary positions, SwiGLU, grouped-query attention through SDPA; the LM
                head is tied to the word embeddings
    sequence    [visual tokens ; [CLS] text [SEP]], causal, over bert-base-uncased word pieces ([CLS] is the
                beginning of the text, [SEP] its end); random init from a size preset, or the weights of a
                local Llama folder (`preset.pretrained`); nothing is downloaded

Losses, and the forward pass each one runs on. Which share a pass decides what multitask and MELTR cost
against finetune: a loss on a pass the primary already runs is nearly free, one with its own pass is not.

    pass [video ; text]   text: the clip's caption (retrieval, captioning) or "question answer" (QA)
        lm          LM loss on the text after the visual prefix: captioning's primary; caption generation
                    as an auxiliary for the other tasks
        vtm         video-text matching, a head on the text's last state: the positives read this pass
                    (shared with lm), the in-batch negatives (each text with the next clip) need one more
    pass [masked video ; text]   (its own)
        mvm         masked visual-token modelling: the masked frames' features predicted from the LM's
                    states at their positions, NCE against the batch's masked frames (UniVL's cmfm)
        m_lm        LM loss on the text under the masked video (shares the masked pass with mvm)
    passes [video] and [text]   (their own, each shorter than the joint sequence)
        vtc         contrastive alignment of the two passes' pooled states: retrieval's primary, and what
                    retrieval is scored by (a video-only and a text-only pass, as dual encoders do)
    pass [video ; question ...]   (the QA primary's own)
        answer_lm   open-ended QA: LM loss on the answer after [video ; question]
        mc          multiple choice: each option scored by the mean log-likelihood of its tokens after
                    [video ; question] (one sequence per option), cross-entropy over the options
        count       a regression head on the last state of [video ; question] (MSE)
        prompt_lm   LM loss on the question (and subtitle) tokens of the primary's pass (shares it)

Model code is for one device; precision and parallelism are applied by the trainer.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaModel

from .decoding import beam_search
from .losses import VLLM_LOSSES
from .presets import LLMPreset
from .standardise import StandardisedFeatures

_JOINT = {"lm", "vtm"}          # losses that read the [video ; text] pass
_MASKED = {"mvm", "m_lm"}       # losses that read the [masked video ; text] pass
_TASK = {"answer_lm", "mc", "count", "prompt_lm"}  # losses that read the QA primary's pass
ANSWER_TOKENS = 8               # generation budget of an open-ended answer


def llama_config(p: LLMPreset, vocab_size: int, positions: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=p.hidden, intermediate_size=p.intermediate,
        num_hidden_layers=p.layers, num_attention_heads=p.heads, num_key_value_heads=p.kv_heads,
        max_position_embeddings=positions, rms_norm_eps=1e-5, tie_word_embeddings=True, pad_token_id=0,
        attn_implementation="sdpa",
    )


class VideoLLM(StandardisedFeatures, nn.Module):
    family = "videollm"
    # The Linear layers of every decoder layer (LoRA targets) and the blocks FSDP2 shards one by one.
    lora_targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    heads = ("projector", "visual_mask", "vtc_video", "vtc_text", "logit_scale", "vtm_head", "mvm_head",
             "count_head")
    block_types = ("LlamaDecoderLayer",)

    def __init__(self, preset: LLMPreset, feature_dim: int, vocab_size: int, max_words: int = 32,
                 max_frames: int = 32, num_answers: int = 1):
        super().__init__()
        self.preset, self.feature_dim = preset, feature_dim
        self.max_words, self.max_frames, self.num_answers = max_words, max_frames, num_answers
        h = preset.hidden
        positions = max_frames // preset.visual_pool + 2 * max_words + ANSWER_TOKENS + 2
        if preset.pretrained:
            self.lm = LlamaModel.from_pretrained(preset.pretrained, attn_implementation="sdpa")
            if self.lm.config.vocab_size != vocab_size:
                raise ValueError(f"{preset.pretrained}: vocabulary {self.lm.config.vocab_size}, expected "
                                 f"{vocab_size} (the bert-base-uncased word pieces)")
        else:
            self.lm = LlamaModel(llama_config(preset, vocab_size, positions))
        self.init_feature_stats(feature_dim)  # standardise.py: set from the training clips, saved with the weights
        self.projector = nn.Sequential(nn.Linear(feature_dim, h), nn.GELU(), nn.Linear(h, h))
        self.visual_mask = nn.Parameter(torch.zeros(h))  # stands in for a masked visual token (mvm)
        d = min(h, 256)
        self.vtc_video, self.vtc_text = nn.Linear(h, d), nn.Linear(h, d)
        # CLIP-style learned temperature; shape (1,), not a scalar, which FSDP2 cannot shard
        self.logit_scale = nn.Parameter(torch.tensor([math.log(20.0)]))
        self.vtm_head = nn.Linear(h, 1)
        self.mvm_head = nn.Linear(h, feature_dim)
        self.count_head = nn.Linear(h, 1)

    # ---------------------------------------------------------------- sequences
    def visual_tokens(self, video: torch.Tensor, video_mask: torch.Tensor, masked: torch.Tensor | None = None):
        """(B, T', hidden) visual tokens and their mask; `masked` (B, T) frames are replaced by the mask token."""
        x, m = self.standardise(video), video_mask
        if self.preset.visual_pool > 1:  # average s consecutive tokens (a frame's tokens, or neighbouring frames)
            x, m = self._pooled(x).mean(2), self._pooled(m).amax(2)
            masked = None if masked is None else self._pooled(masked).any(2)
        tokens = self.projector(x)
        if masked is not None:
            tokens = torch.where(masked.unsqueeze(-1), self.visual_mask.to(tokens.dtype), tokens)
        return tokens, m

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, ...) as (B, T // s, s, ...) for s = visual_pool: the groups of consecutive tokens pooled into
        one (a remainder of fewer than s tokens is dropped)."""
        s = self.preset.visual_pool
        b, t = x.shape[:2]
        return x[:, :t // s * s].reshape(b, t // s, s, *x.shape[2:])

    def words(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.embed_tokens(ids)

    def run(self, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Last hidden states of the causal LM over the concatenated (embeddings, mask) parts. Positions count
        only real tokens, so padding inside the sequence (between the video and a left-padded prompt) does not
        shift the text's positions."""
        embeds = torch.cat([e for e, _ in parts], 1)
        mask = torch.cat([m for _, m in parts], 1).long()
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        return self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.lm.embed_tokens.weight)

    def _next_token_nll(self, h: torch.Tensor, ids: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
        """Per-token negative log-likelihood of ids[:, 1:] from the states before them, where `picked` (B, L):
        (B, L-1) with zeros where not picked. h: the text part's states (B, L, hidden)."""
        target = picked[:, 1:]
        nll = torch.zeros(target.shape, dtype=_upcast(h).dtype, device=h.device)
        if target.any():
            logits = _upcast(self.logits(h[:, :-1][target]))
            nll[target] = F.cross_entropy(logits, ids[:, 1:][target], reduction="none")
        return nll

    def _lm_loss(self, h, ids, picked) -> torch.Tensor:
        nll = self._next_token_nll(h, ids, picked)
        n = picked[:, 1:].sum()
        return nll.sum() / n.clamp(min=1) if n > 0 else h.sum() * 0

    @staticmethod
    def _last(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The state of each row's last real token."""
        idx = (mask.long().cumsum(1).argmax(1)).clamp(min=0)
        return h[torch.arange(h.shape[0], device=h.device), idx]

    @staticmethod
    def _mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)

    # ---------------------------------------------------------------- losses
    def forward(self, batch: dict, names: tuple[str, ...] | list[str] = VLLM_LOSSES) -> dict[str, torch.Tensor]:
        """Compute only the named losses, each pass at most once (see the module docstring)."""
        unknown = set(names) - set(VLLM_LOSSES)
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}; expected names from {VLLM_LOSSES}")
        want, out = set(names), {}
        vm, ids, tm = batch["video_mask"], batch["text_ids"], batch["text_mask"]
        vis = self.visual_tokens(batch["video"], vm)
        n_vis = vis[0].shape[1]
        text = (self.words(ids), tm)
        if _JOINT & want:
            h = self.run([vis, text])
            if "lm" in want:
                out["lm"] = self._lm_loss(h[:, n_vis:], ids, tm.bool())
            if "vtm" in want:
                out["vtm"] = self._vtm_loss(self._last(h, torch.cat([vis[1], tm], 1)), vis, text)
        if _MASKED & want:
            masked = batch["mfm_mask"]
            mvis = self.visual_tokens(batch["video"], vm, masked)
            h = self.run([mvis, text])
            if "mvm" in want:
                out["mvm"] = self._mvm_loss(h[:, :n_vis], batch, masked)
            if "m_lm" in want:
                out["m_lm"] = self._lm_loss(h[:, n_vis:], ids, tm.bool())
        if "vtc" in want:
            t, v = self.text_embedding(ids, tm), self.video_embedding(vis)
            scores = self.logit_scale.clamp(max=math.log(100.0)).exp() * (t @ v.t())
            target = torch.arange(scores.shape[0], device=scores.device)
            out["vtc"] = (F.cross_entropy(scores, target) + F.cross_entropy(scores.t(), target)) / 2
        if _TASK & want:
            out.update(self._task_losses(batch, vis, want))
        return {n: out[n] for n in names}

    def _task_losses(self, batch: dict, vis, want: set) -> dict[str, torch.Tensor]:
        out = {}
        n_vis = vis[0].shape[1]
        if "opt_ids" in batch:  # multiple choice: [video ; [CLS] question [SEP] option [SEP]] per option
            b, o = batch["opt_ids"].shape[:2]
            h, flat = self._option_pass(vis, batch["opt_ids"], batch["opt_mask"], batch["opt_type"])
            if "mc" in want:
                out["mc"] = F.cross_entropy(self._option_scores(h, *flat).view(b, o), batch["answer"])
            if "prompt_lm" in want:  # the question tokens of each record's correct option's sequence
                right = torch.arange(b, device=h.device) * o + batch["answer"]
                out["prompt_lm"] = self._lm_loss(h[right], flat[0][right], flat[1][right] & ~flat[2][right])
            return out
        if "ans_ids" in batch:  # open-ended: [video ; [CLS] question [SEP] answer [SEP]]
            ids, mask, kind = batch["ans_ids"], batch["ans_mask"].bool(), batch["ans_type"].bool()
        else:  # count: [video ; [CLS] question [SEP] subtitles [SEP]]
            ids, mask = batch["q_ids"], batch["q_mask"].bool()
            kind = torch.zeros_like(mask)
        h = self.run([vis, (self.words(ids), mask)])
        if "answer_lm" in want:
            out["answer_lm"] = self._lm_loss(h[:, n_vis:], ids, mask & kind)
        if "count" in want:
            pred = _upcast(self._count(h, vis[1], mask))
            out["count"] = F.mse_loss(pred, batch["target"].to(pred.dtype))
        if "prompt_lm" in want:
            out["prompt_lm"] = self._lm_loss(h[:, n_vis:], ids, mask & ~kind)
        return out

    def _option_pass(self, vis, ids, mask, kind):
        """The text states of [video ; [CLS] question [SEP] option [SEP]] for every option (B x O sequences), with
        the flattened (ids, mask, kind) they were read from."""
        b, o, n = ids.shape
        flat = ids.reshape(b * o, n), mask.reshape(b * o, n).bool(), kind.reshape(b * o, n).bool()
        rep = vis[0].repeat_interleave(o, 0), vis[1].repeat_interleave(o, 0)
        return self.run([rep, (self.words(flat[0]), flat[1])])[:, vis[0].shape[1]:], flat

    def _count(self, h, vis_mask, mask) -> torch.Tensor:
        """The count head on the last real token of [video ; question] (h: that pass's states)."""
        return self.count_head(self._last(h, torch.cat([vis_mask, mask], 1))).squeeze(-1)

    def _option_scores(self, h, ids, mask, kind) -> torch.Tensor:
        """Mean log-likelihood of each sequence's option tokens (type 1), given everything before them."""
        picked = mask & kind
        nll = self._next_token_nll(h, ids, picked)
        return -nll.sum(1) / picked[:, 1:].sum(1).clamp(min=1)

    def text_embedding(self, ids, mask) -> torch.Tensor:
        """L2-normalised pooled state of a text-only pass (mean over real tokens): what `vtc` aligns."""
        return F.normalize(self.vtc_text(self._mean(self.run([(self.words(ids), mask)]), mask)), dim=-1)

    def video_embedding(self, vis) -> torch.Tensor:
        """L2-normalised pooled state of a video-only pass over the visual tokens `vis` (tokens, mask)."""
        return F.normalize(self.vtc_video(self._mean(self.run([vis]), vis[1])), dim=-1)

    def _vtm_loss(self, pos_state: torch.Tensor, vis, text) -> torch.Tensor:
        b = pos_state.shape[0]
        if b < 2:  # no in-batch negative
            return pos_state.sum() * 0
        shifted = vis[0].roll(1, 0), vis[1].roll(1, 0)  # each text with the next clip: a negative
        h = self.run([shifted, text])
        neg_state = self._last(h, torch.cat([shifted[1], text[1]], 1))
        logits = _upcast(self.vtm_head(torch.cat([pos_state, neg_state])).squeeze(-1))
        labels = torch.cat([torch.ones(b), torch.zeros(b)]).to(logits)
        return F.binary_cross_entropy_with_logits(logits, labels)

    def _mvm_loss(self, h_vis: torch.Tensor, batch: dict, masked: torch.Tensor) -> torch.Tensor:
        target = self.standardise(batch["video"])
        if self.preset.visual_pool > 1:  # the pooled tokens' masks and targets, as visual_tokens pools them
            masked, target = self._pooled(masked).any(2), self._pooled(target).mean(2)
        target = target[masked]
        if not masked.any():
            return h_vis.sum() * 0
        pred = self.mvm_head(h_vis[masked])
        # NCE over the batch's masked tokens, dot products scaled by 1/sqrt(D) (see univl.py's cmfm)
        logits = _upcast(pred @ target.t().to(pred.dtype)) / math.sqrt(target.shape[-1])
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def retrieval_scores(self, text_ids, text_mask, video, video_mask, chunk: int = 64) -> torch.Tensor:
        """Cosine similarity (n_text, n_video) of the pooled text-only and video-only passes."""
        ts = [self.text_embedding(text_ids[i:i + chunk], text_mask[i:i + chunk])
              for i in range(0, text_ids.shape[0], chunk)]
        vs = [self.video_embedding(self.visual_tokens(video[i:i + chunk], video_mask[i:i + chunk]))
              for i in range(0, video.shape[0], chunk)]
        return torch.cat(ts) @ torch.cat(vs).t()

    @torch.no_grad()
    def caption_ids(self, video, video_mask, bos_id: int, eos_id: int, max_len: int, beam_size: int = 1):
        """Caption token ids per clip (without [CLS]/[SEP]), decoded after [video ; [CLS]]."""
        prompt = torch.full((video.shape[0], 1), bos_id, dtype=torch.long, device=video.device)
        return self.generate(video, video_mask, prompt, torch.ones_like(prompt), eos_id, max_len, beam_size)

    @torch.no_grad()
    def generate(self, video, video_mask, prompt_ids, prompt_mask, eos_id: int, max_len: int,
                 beam_size: int = 1) -> list[list[int]]:
        """Token ids after [video ; prompt] per clip, at least one token long: greedy (beam_size 1, all clips
        at once; prompts left-padded) or beam search ranked by mean log-probability per token (decoding.py, as
        the UniVL family decodes). Recomputes the sequence at each step (no cache): short answers and captions."""
        vis = self.visual_tokens(video, video_mask)
        if beam_size == 1:
            return self._greedy(vis, prompt_ids, prompt_mask, eos_id, max_len)
        return [self._beam((vis[0][i:i + 1], vis[1][i:i + 1]), prompt_ids[i:i + 1][:, prompt_mask[i].bool()],
                           eos_id, max_len, beam_size) for i in range(video.shape[0])]

    def _next_logprobs(self, vis, seqs, mask, eos_id: int, first: bool) -> torch.Tensor:
        h = self.run([vis, (self.words(seqs), mask)])
        logp = F.log_softmax(self.logits(h[:, -1]).float(), dim=-1)
        if first:  # no empty output
            logp[:, eos_id] = float("-inf")
        return logp

    def _greedy(self, vis, prompt_ids, prompt_mask, eos_id, max_len) -> list[list[int]]:
        seqs, mask = _left_pad(prompt_ids, prompt_mask)
        done = torch.zeros(seqs.shape[0], dtype=torch.bool, device=seqs.device)
        start = seqs.shape[1]
        for i in range(max_len):
            nxt = self._next_logprobs(vis, seqs, mask, eos_id, i == 0).argmax(-1).masked_fill(done, eos_id)
            seqs = torch.cat([seqs, nxt[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(nxt[:, None])], 1)
            done |= nxt == eos_id
            if done.all():
                break
        return [row[:row.index(eos_id)] if eos_id in row else row for row in seqs[:, start:].tolist()]

    def _beam(self, vis, prompt: torch.Tensor, eos_id, max_len, beam_size) -> list[int]:
        start = prompt.shape[1]

        def next_logprobs(beams):
            n = beams.shape[0]
            return self._next_logprobs((vis[0].expand(n, -1, -1), vis[1].expand(n, -1)), beams,
                                       torch.ones_like(beams), eos_id, beams.shape[1] == start)

        return beam_search(next_logprobs, prompt, eos_id, max_len, beam_size)

    @torch.no_grad()
    def option_scores(self, task: dict, video, video_mask) -> torch.Tensor:
        """(B, O) mean log-likelihood of each option after [video ; question] (what `mc` trains)."""
        b, o = task["opt_ids"].shape[:2]
        h, flat = self._option_pass(self.visual_tokens(video, video_mask), task["opt_ids"], task["opt_mask"],
                                    task["opt_type"])
        return self._option_scores(h, *flat).view(b, o)

    @torch.no_grad()
    def answer_texts(self, task: dict, video, video_mask, answers: list[str], tokenizer) -> list[str]:
        """Open-ended answers, generated greedily after [video ; [CLS] question [SEP]] (the answer tokens of
        `task`, type 1, are never read) and decoded; the accuracy rules then treat them as any prediction."""
        prompt_mask = task["ans_mask"].bool() & ~task["ans_type"].bool()
        seqs = self.generate(video, video_mask, task["ans_ids"], prompt_mask, tokenizer.sep_token_id, ANSWER_TOKENS)
        return [tokenizer.decode(s, skip_special_tokens=True).strip() for s in seqs]

    @torch.no_grad()
    def count_predictions(self, task: dict, video, video_mask) -> torch.Tensor:
        vis = self.visual_tokens(video, video_mask)
        mask = task["q_mask"].bool()
        return self._count(self.run([vis, (self.words(task["q_ids"]), mask)]), vis[1], mask)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Losses in at least fp32: bf16/fp16 activations are upcast, fp64 (the tests' references) stays fp64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _left_pad(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens (mask 1) to the right end, so that the next token follows them."""
    mask = mask.bool()
    n = int(mask.sum(1).max())
    out = torch.zeros((ids.shape[0], n), dtype=ids.dtype, device=ids.device)
    out_mask = torch.zeros((ids.shape[0], n), dtype=torch.long, device=ids.device)
    for i in range(ids.shape[0]):
        row = ids[i][mask[i]]
        out[i, n - len(row):] = row
        out_mask[i, n - len(row):] = 1
    return out, out_mask
