"""Defaults in one place: config.py's dataclasses, params.yaml, the schema and hypergradient() agree."""
from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import torch
import yaml

import meltr.combiners
import meltr.config
from meltr.config import CostConfig, EvaluateConfig, FeatureConfig, MeltrConfig, ScalingConfig, TrainConfig
from meltr.meta.hypergradient import hypergradient

ROOT = Path(__file__).resolve().parents[1]
PARAMS_TEXT = (ROOT / "params.yaml").read_text()
PARAMS = yaml.safe_load(PARAMS_TEXT)
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "params.schema.yaml").read_text())

SECTIONS = {"features": FeatureConfig, "train": TrainConfig, "meltr": MeltrConfig, "scaling": ScalingConfig,
            "cost": CostConfig, "evaluate": EvaluateConfig}
# Keys the workflow reads itself, never passed to the section's command as a flag:
PIPELINE_ONLY = {
    "features": set(),
    "train": set(),
    "meltr": set(),
    # The report rule reads both (workflow/rules/report.smk); the scaling rule leaves them out of the sweep's
    # flags (workflow/rules/scaling.smk): committed sweeps measured elsewhere, and the memory sizes a report
    # compares against, neither of them a setting of `meltr bench scaling`.
    "scaling": {"results", "memory_budgets_gb"},
    "cost": set(),
    "evaluate": set(),
}
DIFFERS = "differs from the default"


def section_comments(text: str, section: str) -> dict[str, str]:
    """{key: the comment on that key's own line} for the top-level `section:` of a YAML text."""
    out, inside = {}, False
    for line in text.splitlines():
        if re.match(r"^\S", line):  # a top-level key or comment ends the previous section
            inside = line.startswith(f"{section}:")
            continue
        m = inside and re.match(r"^  ([A-Za-z_][\w]*):(.*)$", line)
        if m:
            rest = m.group(2)
            out[m.group(1)] = rest.split(" #", 1)[1] if " #" in rest else ""
    return out


def field_defaults(cls) -> dict:
    """The declared defaults (None where a section resolves a key later, as meltr.net's settings)."""
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls)}


def test_section_comments_reads_each_keys_own_comment():
    text = "a:\n  x: 1   # one\n  y: [2]\n    - nested: 3  # not a key of a\nb:\n  x: 4  # other section\n"
    assert section_comments(text, "a") == {"x": " one", "y": ""}
    assert section_comments(text, "b") == {"x": " other section"}
    assert set(section_comments(PARAMS_TEXT, "meltr")) == set(PARAMS["meltr"])


@pytest.mark.parametrize("section", SECTIONS)
def test_params_yaml_values_are_the_dataclass_defaults_or_say_why_not(section):
    defaults = field_defaults(SECTIONS[section])
    comments = section_comments(PARAMS_TEXT, section)
    wrong = {key: (value, defaults[key]) for key, value in PARAMS[section].items()
             if key in defaults and value != defaults[key] and DIFFERS not in comments.get(key, "")}
    assert not wrong, (f"params.yaml {section}: (value, dataclass default) differ without a "
                       f"'# {DIFFERS} (...): why' comment: {wrong}")


@pytest.mark.parametrize("section", SECTIONS)
def test_every_params_yaml_key_is_a_dataclass_field_or_pipeline_only(section):
    fields = {f.name for f in dataclasses.fields(SECTIONS[section])}
    unknown = set(PARAMS[section]) - fields - PIPELINE_ONLY[section]
    assert not unknown, f"params.yaml {section}: keys that are no field of {SECTIONS[section].__name__}: {unknown}"
    assert not PIPELINE_ONLY[section] & fields, "a pipeline-only key that is a field after all"


@pytest.mark.parametrize("section", SECTIONS)
def test_every_schema_property_names_a_dataclass_field_or_pipeline_only(section):
    fields = {f.name for f in dataclasses.fields(SECTIONS[section])}
    props = set(SCHEMA["properties"][section]["properties"])
    unknown = props - fields - PIPELINE_ONLY[section]
    assert not unknown, f"schema {section}: properties that are no field of {SECTIONS[section].__name__}: {unknown}"


@pytest.mark.parametrize("section", SECTIONS)
def test_schema_defaults_if_any_are_the_dataclass_defaults(section):
    defaults = field_defaults(SECTIONS[section])
    props = SCHEMA["properties"][section]["properties"]
    wrong = {key: (prop["default"], defaults.get(key)) for key, prop in props.items()
             if "default" in prop and prop["default"] != defaults.get(key)}
    assert not wrong, f"schema {section}: (schema default, dataclass default) differ: {wrong}"


def test_library_and_pipeline_users_get_the_same_meltr():
    assert MeltrConfig() == MeltrConfig(**PARAMS["meltr"])


def test_hypergradient_keyword_defaults_are_meltr_configs():
    sig = inspect.signature(hypergradient).parameters
    cfg = MeltrConfig()
    for name in ("neumann_terms", "neumann_alpha", "fd_eps"):
        assert sig[name].default == getattr(cfg, name), name


def test_every_method_has_a_combiner():
    assert set(meltr.combiners.REGISTRY) == set(meltr.config.METHODS)


def test_meltr_net_brings_its_backbones_official_settings_unless_a_key_overrides_them():
    from meltr.combiners import build_combiner
    from meltr.config import NET_SETTINGS
    from meltr.meta.net import NET_PRESETS

    univl = MeltrConfig()
    assert (univl.optimizer, univl.lr, univl.beta2, univl.weight_decay, univl.clip, univl.gamma, univl.k) == \
        ("adam", 1e-3, 0.999, 3e-5, 50.0, 0.0, 3)
    violet = MeltrConfig(net="violet_retrieval")
    assert (violet.optimizer, violet.lr, violet.beta2, violet.weight_decay, violet.clip, violet.gamma,
            violet.dropout, violet.buffer_eviction) == ("adamw", 3e-6, 0.98, 1e-3, 12.0, 0.1, 0.1, "random")
    assert (MeltrConfig(net="violet_qa").lr, MeltrConfig(net="violet_qa").weight_decay) == (1e-4, 1e-4)
    allinone = MeltrConfig(net="allinone")
    assert (allinone.optimizer, allinone.lr, allinone.clip, allinone.k, allinone.init_std) == ("adam", 1e-4, 1.0, 5, 0.02)
    assert MeltrConfig(net="allinone", k=3, lr=5e-4).k == 3 and MeltrConfig(net="allinone", lr=5e-4).lr == 5e-4
    assert set(NET_SETTINGS) == set(NET_PRESETS)
    # the combiner takes them: AdamW with Violet's betas, All-in-one's N(0, 0.02) weights
    comb = build_combiner("meltr", ["a", "b"], "a", {"net": "violet_qa"})
    assert isinstance(comb.meta_opt, torch.optim.AdamW) and comb.meta_opt.defaults["betas"] == (0.9, 0.98)
    torch.manual_seed(0)
    std = build_combiner("meltr", ["a", "b"], "a", {"net": "allinone"}).net.scale_emb[0].weight.std().item()
    assert 0.01 < std < 0.03  # PyTorch's default init of Linear(1, 128) would be ~0.58
