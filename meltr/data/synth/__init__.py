"""Synthetic stand-ins for the datasets, written in each dataset's real on-disk format with real media:
one writer per dataset (`msrvtt`, `youcook2`, `tgifqa`, `tvqa`, `msvdqa`) and the drawing helpers they share
(`common`)."""
from __future__ import annotations

WRITERS = {"msrvtt": "meltr.data.synth.msrvtt:synth_msrvtt", "youcook2": "meltr.data.synth.youcook2:synth_youcook2",
           "tgifqa": "meltr.data.synth.tgifqa:synth_tgifqa", "tvqa": "meltr.data.synth.tvqa:synth_tvqa",
           "msvdqa": "meltr.data.synth.msvdqa:synth_msvdqa"}
