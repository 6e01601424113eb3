"""The offline demo's reasoner: a tiny format-tuned Qwen2.5-VL written once into the app's model folder.

It always gives the same answer, whatever the image or question: it shows the whole path (reasoner, parser,
segmenter, label) working offline, and nothing about medicine. Every result it produces says so.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from monailabel_app.demo.tiny_models import build_tiny_reasoner
from monailabel_app.reasoning.identity import TINY_MODEL_MARKER


def ensure_demo_reasoner(folder: str | Path) -> Path:
    """Build into a scratch folder and rename, so a crash mid-build never leaves a half-written model behind."""
    folder = Path(folder)
    if (folder / TINY_MODEL_MARKER).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        build_tiny_reasoner(scratch, format_tuned=True)
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder
