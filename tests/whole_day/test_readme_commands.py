"""The manual's commands run as written: every shell block titled `demo-server` (```bash title="demo-server") (in the README and the docs pages,
in the order the README lists them) runs against the README's default start (`bash scripts/start.sh`), and every
block that talks to a server is marked, either so or as needing what a test machine lacks (`needs-7b`, `needs-gpu`,
`needs-realm`)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.default_start import DefaultStart
from tests.support.monailabel_server import APP_DIR

pytestmark = [pytest.mark.server, pytest.mark.slow]

README = APP_DIR / "README.md"
BLOCK = re.compile(r"```bash(?: title=\"([a-z0-9-]+)\")?[^\n]*\n(.*?)```", re.S)  # the mark is the block's title
PAGE_LINK = re.compile(r"\]\((docs/[a-z0-9_-]+\.md)[)#]")
MARKS = {"demo-server", "needs-7b", "needs-gpu", "needs-realm"}
README_SERVER = "http://127.0.0.1:8000"


def manual() -> list:
    """The README, then the docs pages in the order it links them, then any page it does not link."""
    linked = list(dict.fromkeys(APP_DIR / link for link in PAGE_LINK.findall(README.read_text(encoding="utf-8"))))
    return [README, *linked, *sorted(set((APP_DIR / "docs").glob("*.md")) - set(linked))]


def shell_blocks() -> list[tuple[str, str]]:
    """(mark, commands) of every bash block of the manual, in its order."""
    return [(info.strip(), body) for page in manual() for info, body in BLOCK.findall(page.read_text(encoding="utf-8"))]


def test_every_block_that_talks_to_a_server_is_marked():
    unmarked = [
        body.splitlines()[0] for mark, body in shell_blocks() if not mark and re.search(r"curl |" + README_SERVER, body)
    ]
    assert unmarked == []
    assert {mark for mark, _ in shell_blocks() if mark} <= MARKS
    assert sum(mark == "demo-server" for mark, _ in shell_blocks()) >= 3


@pytest.fixture(scope="module")
def default_start(tmp_path_factory):
    work = tmp_path_factory.mktemp("default_start")
    # the default start's demo, with its model folder in the test's: the README's training block must not publish
    # into the app's own model/ (later default starts would serve it)
    running = DefaultStart(work, args=["--conf", "demo", "true", "--conf", "model_dir", str(work / "model")]).start()
    yield running
    running.stop()


def test_the_demo_server_blocks_run_as_written_on_the_default_start(default_start, tmp_path):
    """In order, each in a fresh shell with `set -euo pipefail`; the only change is the port the test's start has."""
    for number, (mark, body) in enumerate(shell_blocks()):
        if mark != "demo-server":
            continue
        commands = body.replace(README_SERVER, default_start.url)
        ran = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + commands],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert ran.returncode == 0, f"manual block {number}:\n{commands}\nstdout:\n{ran.stdout[-2000:]}\n{ran.stderr}"
        if "/infer/" in commands and "output=json" in commands:
            assert '"status"' in ran.stdout and "SeriesDescription" not in ran.stderr


@pytest.mark.browser
def test_the_answers_page_lists_the_images_and_their_ids(default_start):
    """Where a user looks for the ids to ask about: the answers page's index, in a real Chromium."""
    from tests.support.browser import headless_chromium

    cts = {one["0020000E"]["Value"][0] for one in default_start.series("CT")}
    with headless_chromium() as chromium:
        page = chromium.new_page()
        page.goto(f"{default_start.url}/answers/")
        page.wait_for_selector("#images .image-id", timeout=60_000)
        listed = {
            row.query_selector(".image-id").text_content(): row.query_selector_all("td")[1].text_content()
            for row in page.query_selector_all("#images tr")
            if row.query_selector(".image-id")
        }
        link = page.query_selector("#images .image-id").get_attribute("href")
    assert cts and cts <= set(listed) and all(listed[uid].startswith("CT") for uid in cts)
    assert link.startswith("/answers/?image=")
