"""Shared test fixtures. Each block belongs to one area of the app; keep blocks separate."""

from pathlib import Path

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Toy-sized models run fastest on one thread, and the test machine's 2 cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------------------------------
# Reasoner checkpoints: tiny Qwen2.5-VL folders built in code (monailabel_app/demo/tiny_models.py), once per session.
# `tiny_reasoner_dir`: random weights, babbles. `format_tuned_reasoner_dir`: always answers DEFAULT_ANSWER_TEXT
# (read it back from the folder's tiny_model.json "answer_text"); ~10-15 s to build on 2 CPU cores.
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_reasoner_dir(tmp_path_factory) -> Path:
    from monailabel_app.demo.tiny_models import build_tiny_reasoner

    return build_tiny_reasoner(tmp_path_factory.mktemp("tiny_reasoner"), seed=0)


@pytest.fixture(scope="session")
def format_tuned_reasoner_dir(tmp_path_factory) -> Path:
    from monailabel_app.demo.tiny_models import build_tiny_reasoner

    return build_tiny_reasoner(tmp_path_factory.mktemp("format_tuned_reasoner"), seed=0, format_tuned=True)


# --------------------------------------------------------------------------------------------- end of reasoner block


# ---------------------------------------------------------------------------------------------------------------------
# A browser: a real headless Chromium (Debian's `chromium` via Playwright, tests/support/browser.py), one per test
# module, for the tests that drive OHIF as a clinician does.
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from tests.support.browser import headless_chromium  # skips without Playwright or Chromium

    with headless_chromium() as chromium:
        yield chromium


# ---------------------------------------------------------------------------------------------- end of browser block
