"""Beam search over any model's next-token log-probabilities: the one decoder both model families use."""
from __future__ import annotations

from typing import Callable

import torch


def beam_search(next_logprobs: Callable[[torch.Tensor], torch.Tensor], prompt: torch.Tensor, eos_id: int,
                max_len: int, beam_size: int) -> list[int]:
    """The token ids after `prompt` (1, P) with the best mean log-probability per token ([SEP] included):
    summed log-probabilities would favour ever shorter outputs, down to the empty one. `next_logprobs(beams)`
    gives (n_beams, vocab) log-probabilities of the token after each beam (barring eos_id right after the
    prompt is the caller's: no empty output)."""
    start = prompt.shape[1]
    beams, scores = prompt, torch.zeros(1, device=prompt.device)
    finished: list[tuple[float, list[int]]] = []
    for _ in range(max_len):
        logp = next_logprobs(beams)
        total = (scores[:, None] + logp).reshape(-1)
        top = torch.topk(total, min(beam_size * 2, total.numel()))
        keep, keep_scores = [], []
        for score, flat in zip(top.values.tolist(), top.indices.tolist()):
            b, tok = divmod(flat, logp.shape[1])
            seq = beams[b].tolist()[start:] + [tok]
            if tok == eos_id:
                finished.append((score / len(seq), seq[:-1]))
            elif len(keep) < beam_size:
                keep.append(beams[b].tolist() + [tok])
                keep_scores.append(score)
        # An open beam's mean can still rise; stop once beam_size have finished and the best open beam's sum
        # is already below the best finished mean times the longest length still possible.
        best_open = keep_scores[0] if keep_scores else float("-inf")
        bound = max((f[0] for f in finished), default=float("-inf")) * (max_len + 1)
        if not keep or (len(finished) >= beam_size and best_open < bound):
            break
        beams = torch.tensor(keep, dtype=torch.long, device=prompt.device)
        scores = torch.tensor(keep_scores, device=prompt.device)
    if not finished:  # nothing ended within max_len: the best open beam
        finished.append((float(scores[0]) / max(1, beams.shape[1] - start), beams[0].tolist()[start:]))
    return max(finished, key=lambda f: f[0])[1]
