"""Which losses each task family trains with: names, primaries and loss sets (pure data, no torch).

Names as in meltr-official.md §3, UniVL's order; the model (`univl.py`) computes them.
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


def task_losses(family: str, loss_set: str = "univl8") -> tuple[str, ...]:
    """The losses a task trains with, primary first."""
    if family in ("retrieval", "captioning"):
        if loss_set not in LOSS_SETS:
            raise ValueError(f"loss set {loss_set!r}: expected one of {', '.join(LOSS_SETS)}")
        primary = PRIMARY[family]
        return (primary,) + tuple(n for n in LOSS_SETS[loss_set] if n != primary)
    return (PRIMARY[family], "align", "cmlm", "cmfm")  # Violet's QA set: the answer loss, vtm, mtm, mvm


TASK_LOSSES = {f: task_losses(f) for f in PRIMARY}
