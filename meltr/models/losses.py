"""Which losses each task family trains with, per model family: names, primaries and loss sets (pure data).

UniVL family: names as in meltr-official.md §3, UniVL's order; `univl.py` computes them. VideoLLM family:
`videollm.py` computes them, and its docstring says which share the primary's forward pass.
"""
from __future__ import annotations

# UniVL's eight, in MELTR-UniVL's order (meltr-official.md §3), then the QA heads.
LOSS_NAMES = ("joint", "align", "cmlm", "cmfm", "m_joint", "m_align", "decoder", "m_decoder")
QA_LOSSES = ("mc", "oe", "count")
ALL_LOSSES = LOSS_NAMES + QA_LOSSES
# Primary loss per task family; the auxiliary losses follow it (Violet's QA set: primary, vtm, mtm, mvm).
PRIMARY = {"retrieval": "align", "captioning": "decoder", "multiple_choice": "mc", "open_ended": "oe",
           "count": "count"}
# Loss sets for retrieval and captioning: UniVL's five pre-training objectives, or MELTR-UniVL's eight
# (the five plus the masked-input m_joint, m_align, m_decoder; m_align costs a second B x B cross encoding).
LOSS_SETS = {"univl5": ("joint", "align", "cmlm", "cmfm", "decoder"), "univl8": LOSS_NAMES}


# The VideoLLM family: a primary per task family and four auxiliaries a VideoLLM fine-tune would have.
VLLM_LOSSES = ("lm", "vtc", "vtm", "mvm", "m_lm", "answer_lm", "mc", "count", "prompt_lm")
VLLM_TASK_LOSSES = {
    "retrieval": ("vtc", "lm", "vtm", "mvm", "m_lm"),         # caption generation as an auxiliary
    "captioning": ("lm", "vtc", "vtm", "mvm", "m_lm"),
    "open_ended": ("answer_lm", "prompt_lm", "vtc", "vtm", "mvm"),
    "multiple_choice": ("mc", "prompt_lm", "vtc", "vtm", "mvm"),
    "count": ("count", "prompt_lm", "vtc", "vtm", "mvm"),
}


def primary_loss(family: str, model_family: str = "univl") -> str:
    """The primary loss of a task family on a model family."""
    return VLLM_TASK_LOSSES[family][0] if model_family == "videollm" else PRIMARY[family]


def task_losses(family: str, loss_set: str = "univl8", model_family: str = "univl") -> tuple[str, ...]:
    """The losses a task trains with, primary first (`loss_set` chooses among the UniVL family's sets)."""
    if model_family == "videollm":
        return VLLM_TASK_LOSSES[family]
    if family in ("retrieval", "captioning"):
        if loss_set not in LOSS_SETS:
            raise ValueError(f"loss set {loss_set!r}: expected one of {', '.join(LOSS_SETS)}")
        primary = PRIMARY[family]
        return (primary,) + tuple(n for n in LOSS_SETS[loss_set] if n != primary)
    return (PRIMARY[family], "align", "cmlm", "cmfm")  # Violet's QA set: the answer loss, vtm, mtm, mvm


TASK_LOSSES = {f: task_losses(f) for f in PRIMARY}
