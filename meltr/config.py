"""Every section of params.yaml as a dataclass: the one source of its defaults and of its validation.

The CLI builds its flags from these fields, the pipeline passes params.yaml's values as those flags, and a
library user calling `MeltrConfig()` gets the same MELTR as a pipeline user reading params.yaml (a test holds
the schema's defaults and params.yaml to these). Bad values raise a one-line `MeltrError` naming the key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .data.registry import task_family
from .errors import MeltrError
from .features.presets import BACKBONES, POOLS, VISION_PRESETS
from .meta.hypergradient import ESTIMATORS, FD_EPS, NEUMANN_ALPHA, NEUMANN_TERMS
from .meta.net import NET_PRESETS
from .models.adapters import ADAPTERS
from .models.losses import LOSS_SETS
from .models.presets import get_preset

# The methods the pipeline compares (combiners/: one LossCombiner each).
# finetune and multitask; two cheap learned weightings (combiners/learned.py); MELTR
METHODS = ("finetune", "multitask", "uncertainty", "famo", "meltr")
META_BATCHES = ("replay", "current")
OUT_OF_VOCABULARY = ("wrong", "exclude")  # strict | All-in-one
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 autocast on a GPU, fp32 on a CPU
INF = math.inf


@dataclass(frozen=True)
class Range:
    """What a numeric setting may be: finite, of the right type, inside [lo, hi] (open ends where marked)."""

    lo: float = -INF
    hi: float = INF
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    none_ok: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        if self.hi == INF:
            bound = "" if self.lo == -INF else f" {'>' if self.lo_open else '>='} {self.lo:g}"
        else:
            bound = f" in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        return kind + bound + (" or null" if self.none_ok else "")

    def check(self, where: str, value) -> None:
        if value is None and self.none_ok:
            return
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (self.integer and not isinstance(value, int)) or not math.isfinite(value) \
                or value < self.lo or (self.lo_open and value == self.lo) \
                or value > self.hi or (self.hi_open and value == self.hi):
            raise MeltrError(f"{where}: expected {self.describe()}, got {value!r}")


def check_ranges(section: str, obj, ranges: dict[str, Range]) -> None:
    """Every numeric field of a section against its Range: one-line errors naming section.key."""
    for key, rng in ranges.items():
        rng.check(f"{section}.{key}", getattr(obj, key))


POSITIVE, NON_NEGATIVE, UNIT = Range(0, lo_open=True), Range(0), Range(0, 1)
COUNT, COUNT0 = Range(1, integer=True), Range(0, integer=True)


def check_device(where: str, name: str) -> None:
    """auto, cpu or cuda[:N], and a CUDA device only where this torch sees one: refused before any work."""
    import torch

    if name in ("auto", "cpu"):
        return
    if not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise MeltrError(f"{where} {name!r}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise MeltrError(f"{where} {name!r}: expected an available CUDA device; this torch ({torch.__version__}) "
                         "sees none")
    if ":" in name and int(name[5:]) >= torch.cuda.device_count():
        raise MeltrError(f"{where} {name!r}: expected a device index below {torch.cuda.device_count()}")


@dataclass
class FeatureConfig:
    backbone: str = "clip"
    preset: str = "tiny"
    pretrained: str | None = None
    num_frames: int = 8
    image_size: int = 32
    patch_size: int = 8
    pool: str = "grid"
    frame_diff: bool = False  # append each frame's pooled feature minus the previous frame's (zeros for the first)
    frames_per_token: int = 1  # consecutive sampled frames concatenated into one stored row (clip backbone)
    batch_size: int = 16  # videos per forward
    seed: int = 0
    on_bad_video: str = "error"  # error: stop at a corrupt or missing video | skip: leave it out, listed in the store

    def __post_init__(self):
        check_ranges("features", self, {"num_frames": COUNT, "image_size": COUNT, "patch_size": COUNT,
                                        "frames_per_token": COUNT, "batch_size": COUNT, "seed": COUNT0})
        if self.patch_size > self.image_size:
            raise MeltrError(f"features.patch_size {self.patch_size}: expected at most image_size "
                             f"({self.image_size})")
        if self.pool == "grid" and self.image_size // self.patch_size < 2:
            raise MeltrError(f"features.pool grid: expected at least 2 x 2 patches (image_size / patch_size >= 2) "
                             f"for its four quadrants, got {self.image_size} / {self.patch_size}")
        if self.backbone not in BACKBONES:
            raise MeltrError(f"features.backbone {self.backbone!r}: expected 'clip' or 'videomae'")
        if self.pool not in POOLS:
            raise MeltrError(f"features.pool {self.pool!r}: expected one of {POOLS}")
        if not self.pretrained and self.preset not in VISION_PRESETS:
            raise MeltrError(f"features.preset {self.preset!r}: expected one of {sorted(VISION_PRESETS)}")
        if self.on_bad_video not in ("error", "skip"):
            raise MeltrError(f"features.on_bad_video {self.on_bad_video!r}: expected 'error' or 'skip'")
        if self.num_frames < 1 or self.batch_size < 1:
            raise MeltrError("features.num_frames and features.batch_size: expected >= 1")
        if self.frames_per_token < 1 or self.num_frames % self.frames_per_token:
            raise MeltrError(f"features.frames_per_token {self.frames_per_token}: expected >= 1 and a divisor of "
                             f"num_frames ({self.num_frames})")


@dataclass
class TrainConfig:
    method: str = "multitask"
    model: str = "tiny"
    dataset: str = "msrvtt"
    task: str = "retrieval"
    steps: int = 150
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.1        # linear LR warm-up, then linear decay to 0
    grad_clip: float = 1.0
    max_words: int = 24             # caption tokens incl. [CLS]/[SEP]
    qa_max_words: int = 48          # QA texts: option/question (+ subtitles, cut first)
    mask_prob: float = 0.15
    loss_set: str = "univl8"        # retrieval/captioning: univl5 (UniVL's five) | univl8 (MELTR-UniVL's eight)
    adapters: str = "none"          # none (full fine-tuning) | lora (peft LoRA; MELTR's meta step over the adapters)
    lora_rank: int = 8
    parallel: str = "ddp"           # under torchrun: ddp | fsdp (FSDP2; MELTR: finite_difference, replayed batches)
    checkpointing: bool = False     # activation checkpointing of every transformer block (memory for compute)
    timing_warmup: int = 10         # steps excluded from throughput figures
    nan_patience: int = 5           # consecutive non-finite losses before training stops
    checkpoint_every: int = 50      # steps between resumable checkpoints (0: none)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"        # auto (bf16 autocast on a GPU, fp32 on CPU) | fp32 | bf16
    threads: int | None = None
    meltr: dict = field(default_factory=dict)

    def __post_init__(self):
        check_ranges("train", self, {
            "steps": COUNT, "batch_size": Range(2, integer=True), "lr": POSITIVE, "weight_decay": NON_NEGATIVE,
            "warmup_frac": UNIT, "grad_clip": POSITIVE, "max_words": Range(4, integer=True),
            "qa_max_words": Range(4, integer=True), "mask_prob": Range(0, 1, hi_open=True), "lora_rank": COUNT,
            "timing_warmup": COUNT0, "nan_patience": COUNT, "checkpoint_every": COUNT0, "seed": COUNT0,
            "threads": Range(1, integer=True, none_ok=True)})
        check_device("train.device", self.device)
        if self.method not in METHODS:
            raise MeltrError(f"method {self.method!r}: expected one of {list(METHODS)}")
        get_preset(self.model)  # unknown size -> MeltrError naming it
        task_family(self.dataset, self.task)  # unknown dataset or task -> MeltrError naming it
        if self.loss_set not in LOSS_SETS:
            raise MeltrError(f"train.loss_set {self.loss_set!r}: expected one of {', '.join(LOSS_SETS)}")
        if self.batch_size < 2:
            raise MeltrError("train.batch_size: expected >= 2 (contrastive losses need negatives)")
        if self.parallel not in ("ddp", "fsdp"):
            raise MeltrError(f"train.parallel {self.parallel!r}: expected ddp or fsdp")
        estimator = self.meltr.get("estimator", MeltrConfig.estimator)
        batches = self.meltr.get("meta_batches", MeltrConfig.meta_batches)
        if self.parallel == "fsdp" and self.method == "meltr" and (estimator, batches) != ("finite_difference",
                                                                                             "replay"):
            raise MeltrError("train.parallel fsdp with method meltr: expected meltr.estimator finite_difference and "
                             "meltr.meta_batches replay (FSDP2 runs first-order passes only), got "
                             f"{estimator!r} and {batches!r}")
        if self.precision not in PRECISIONS:
            raise MeltrError(f"train.precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.adapters not in ADAPTERS:
            raise MeltrError(f"train.adapters {self.adapters!r}: expected one of {', '.join(ADAPTERS)}")
        k = MeltrConfig(**self.meltr).k if self.method == "meltr" else None  # validated: an int >= 1
        if k is not None and k > self.steps:
            raise MeltrError(f"meltr.k {k} with train.steps {self.steps}: MELTR would never take a meta step; "
                             f"expected k <= steps")


@dataclass
class MeltrConfig:
    # None: the official value of the backbone `net` names (NET_SETTINGS; UniVL's in the comments)
    k: int | None = None            # meta step every k backbone steps (3)
    buffer_size: int = 10           # replay buffer of recent training batches
    buffer_eviction: str | None = None  # fifo (UniVL) | random (Violet, All-in-one: a random slot, newer likelier)
    optimizer: str | None = None    # meta optimiser: adam (UniVL, All-in-one) | adamw (Violet)
    lr: float | None = None         # UniVL's lr_vnet (1e-3)
    beta1: float | None = None      # (0.9)
    beta2: float | None = None      # (0.999; Violet and All-in-one: 0.98)
    weight_decay: float | None = None  # (3e-5)
    clip: float | None = None       # max norm of phi's gradient (50)
    gamma: float | None = None      # regulariser weight (UniVL: 0, off; Violet/All-in-one: 0.1)
    init_std: float | None = None   # MELTR's weights from N(0, init_std) (All-in-one: 0.02); 0: PyTorch's init
    reg_direct: bool = False        # add the regulariser's direct d/dphi term (the official code drops it)
    # Default: the fastest estimator within its tolerance (finite_difference on the step's own batch, rel. err
    # ~1e-3 vs the official double_backward). The official computation: double_backward on replayed batches.
    estimator: str = "finite_difference"  # double_backward (official) | neumann | jvp | finite_difference
    net: str = "univl"              # size preset of the Meta Loss Transformer
    dropout: float | None = None    # (0: UniVL runs MELTR in eval mode; Violet 0.1)
    neumann_terms: int = NEUMANN_TERMS
    neumann_alpha: float = NEUMANN_ALPHA
    fd_eps: float = FD_EPS          # finite-difference radius, relative to |v|
    meta_batches: str = "current"   # replay (official) | current (ours: the step's own batch and forward)
    # The meta step on the first this-many samples of its batch(es) (None: all): a meta step then costs that
    # fraction, at the price of a noisier hypergradient. With `current` below the step's batch size it no
    # longer reuses the step's forward (~4F x fraction instead of ~3F).
    meta_batch_size: int | None = None
    # replay: official (the official loop: meta steps at 1, 1 + k, ..., drawing from the batches before the
    # step's, which joins the buffer after the meta step) | ours (meta steps at k, 2k, ..., the step's batch
    # in the buffer before the draws)
    replay_schedule: str = "official"
    seed: int = 0

    def __post_init__(self):
        if self.net not in NET_PRESETS:
            raise MeltrError(f"meltr.net {self.net!r}: expected one of {sorted(NET_PRESETS)}")
        # what the net's backbone uses, unless set (a net preset without settings of its own takes UniVL's)
        for key, value in NET_SETTINGS.get(self.net, NET_SETTINGS["univl"]).items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        below_one = Range(0, 1, hi_open=True)
        check_ranges("meltr", self, {
            "k": COUNT, "buffer_size": COUNT, "lr": POSITIVE, "beta1": below_one, "beta2": below_one,
            "weight_decay": NON_NEGATIVE, "clip": POSITIVE, "gamma": NON_NEGATIVE, "dropout": below_one,
            "neumann_terms": COUNT0, "neumann_alpha": POSITIVE, "fd_eps": POSITIVE, "seed": COUNT0,
            "init_std": NON_NEGATIVE,
            # two samples at least: the contrastive losses need a negative
            "meta_batch_size": Range(2, integer=True, none_ok=True)})
        if self.estimator not in ESTIMATORS:
            raise MeltrError(f"meltr.estimator {self.estimator!r}: expected one of {ESTIMATORS}")
        if self.meta_batches not in ("replay", "current"):
            raise MeltrError(f"meltr.meta_batches {self.meta_batches!r}: expected 'replay' or 'current'")
        if self.meta_batches == "current" and self.estimator not in ("finite_difference", "jvp"):
            raise MeltrError(f"meltr.meta_batches 'current' reuses the step's first-order graph: expected "
                             f"estimator finite_difference or jvp, got {self.estimator!r}")
        if self.replay_schedule not in ("official", "ours"):
            raise MeltrError(f"meltr.replay_schedule {self.replay_schedule!r}: expected 'official' or 'ours'")
        if self.buffer_eviction not in ("fifo", "random"):
            raise MeltrError(f"meltr.buffer_eviction {self.buffer_eviction!r}: expected 'fifo' or 'random'")
        if self.optimizer not in ("adam", "adamw"):
            raise MeltrError(f"meltr.optimizer {self.optimizer!r}: expected 'adam' or 'adamw'")


# The official per-backbone MELTR settings (mlvlab/MELTR; ../shared/docs/meltr-official.md), which `meltr.net`
# brings unless a key is set: UniVL's are the defaults; Violet's retrieval and QA settings differ in the meta
# learning rate and weight decay; All-in-one meta-steps every 5 steps and draws MELTR's weights from N(0, 0.02).
NET_SETTINGS = {
    "univl": {"optimizer": "adam", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "weight_decay": 3e-5, "clip": 50.0,
              "gamma": 0.0, "dropout": 0.0, "k": 3, "buffer_eviction": "fifo", "init_std": 0.0},
    "violet_retrieval": {"optimizer": "adamw", "lr": 3e-6, "beta1": 0.9, "beta2": 0.98, "weight_decay": 1e-3,
                         "clip": 12.0, "gamma": 0.1, "dropout": 0.1, "k": 3, "buffer_eviction": "random",
                         "init_std": 0.0},
    "violet_qa": {"optimizer": "adamw", "lr": 1e-4, "beta1": 0.9, "beta2": 0.98, "weight_decay": 1e-4, "clip": 12.0,
                  "gamma": 0.1, "dropout": 0.1, "k": 3, "buffer_eviction": "random", "init_std": 0.0},
    "allinone": {"optimizer": "adam", "lr": 1e-4, "beta1": 0.9, "beta2": 0.98, "weight_decay": 3e-5, "clip": 1.0,
                 "gamma": 0.1, "dropout": 0.0, "k": 5, "buffer_eviction": "random", "init_std": 0.02},
}


# ----------------------------------------------------------------- benchmark methods
BASELINES = ("finetune", "multitask")
LEARNED_WEIGHTINGS = ("uncertainty", "famo")  # timed like the baselines (no k), in cost jobs and sweeps
# MELTR with each estimator on the official replayed meta batches, and the two that reuse the step's batch.
MELTR_VARIANTS = tuple(f"meltr/{e}" for e in ESTIMATORS) + ("meltr/jvp@current", "meltr/finite_difference@current")
BENCH_METHODS = BASELINES + LEARNED_WEIGHTINGS + MELTR_VARIANTS  # the names `bench scaling` times


def method_variant(name: str, meltr_cfg: dict) -> tuple[str, dict]:
    """'meltr/jvp@current' -> ('meltr', {..., estimator: jvp, meta_batches: current})."""
    if name in BASELINES or name in LEARNED_WEIGHTINGS:
        return name, dict(meltr_cfg)
    if name not in MELTR_VARIANTS:
        raise MeltrError(f"scaling method {name!r}: expected one of {', '.join(BENCH_METHODS)}")
    estimator, _, batches = name.removeprefix("meltr/").partition("@")
    return "meltr", {**meltr_cfg, "estimator": estimator, "meta_batches": batches or "replay"}


@dataclass
class ScalingConfig:
    sizes: list[str] = field(default_factory=lambda: ["micro", "tiny", "small", "mini"])
    methods: list[str] = field(default_factory=lambda: ["finetune", "multitask", "meltr/double_backward",
                                                        "meltr/finite_difference@current"])
    ks: list[int] = field(default_factory=lambda: [3])
    batch_sizes: list[int] = field(default_factory=lambda: [8])
    adapters: list[str] = field(default_factory=lambda: ["none"])
    rounds: int = 4                 # timed windows per method (and per k)
    warmup: int | None = None       # steps before timing; None: max(2 max(k), 6)
    feature_dim: int = 1024         # frame features (UniVL's S3D width)
    loss_set: str = "univl8"
    lora_rank: int = 8
    precision: str = "auto"         # auto (bf16 autocast on a GPU, fp32 on CPU) | fp32 | bf16
    peak_tflops: float | None = None  # one device's peak; None: measured by a large matmul in this run
    parallel: str = "ddp"           # under torchrun: ddp | fsdp
    checkpointing: bool = False     # activation checkpointing of every transformer block
    time_budget_s: float | None = None  # points left when it runs out are recorded as skipped
    device: str = "auto"
    seed: int = 0
    meltr: dict = field(default_factory=dict)

    def __post_init__(self):
        for size in self.sizes:
            get_preset(size)
        for m in self.methods:
            method_variant(m, {})
        for a in self.adapters:
            if a not in ADAPTERS:
                raise MeltrError(f"scaling adapters {a!r}: expected one of {', '.join(ADAPTERS)}")
        if not self.ks or not self.batch_sizes or not self.sizes or not self.methods or not self.adapters:
            raise MeltrError("scaling: expected non-empty sizes, methods, ks, batch_sizes and adapters")
        for k in self.ks:
            COUNT.check("scaling.ks", k)
        for b in self.batch_sizes:
            Range(2, integer=True).check("scaling.batch_sizes", b)
        check_ranges("scaling", self, {"rounds": COUNT, "warmup": Range(0, integer=True, none_ok=True),
                                       "feature_dim": COUNT, "lora_rank": COUNT, "seed": COUNT0,
                                       "peak_tflops": Range(0, lo_open=True, none_ok=True),
                                       "time_budget_s": Range(0, lo_open=True, none_ok=True)})
        check_device("scaling.device", self.device)
        if self.precision not in PRECISIONS:
            raise MeltrError(f"scaling.precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.parallel not in ("ddp", "fsdp"):
            raise MeltrError(f"scaling.parallel {self.parallel!r}: expected ddp or fsdp")




@dataclass
class CostConfig:
    """The per-task cost jobs (`meltr bench cost`): the report's cost ratios, methods interleaved."""

    rounds: int = 5                 # timed rounds: one window of k steps per method each
    warmup: int | None = None       # untimed steps per method first; None: max(2k, 6)

    def __post_init__(self):
        check_ranges("cost", self, {"rounds": COUNT, "warmup": Range(1, integer=True, none_ok=True)})


@dataclass
class EvaluateConfig:
    """The evaluation protocols' settings (`meltr evaluate`; docs in meltr/evaluate.py)."""

    beam_size: int = 3              # captioning: beam search width (greedy is reported too)
    out_of_vocabulary: str = "wrong"  # open-ended QA answers outside the training answers: wrong | exclude
    meteor: bool = True             # captioning METEOR (needs java)

    def __post_init__(self):
        check_ranges("evaluate", self, {"beam_size": COUNT})
        if self.out_of_vocabulary not in OUT_OF_VOCABULARY:
            raise MeltrError(f"evaluate.out_of_vocabulary {self.out_of_vocabulary!r}: expected one of "
                             f"{', '.join(OUT_OF_VOCABULARY)}")
