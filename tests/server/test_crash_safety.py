"""A crash loses no label: a server killed (SIGKILL) at any moment of a save leaves, after its next start, a whole
label (the earlier save or the new one, never part of one), a datastore that lists, and every answered save either
current or kept as a version. And the start mends what a crash left (`lib/datastore/repair.py`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

import nibabel
import numpy as np
import pytest
import requests

from lib.datastore.local import GatedLocalDatastore
from monailabel_app.demo.sample_studies import write_png, xray_picture
from tests.support.default_start import DefaultStart

IMAGE_ID = "big"
GRID = (512, 512, 200)  # x, y, z: a CT's grid; a uint8 label of it is 52 MB uncompressed


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def partials_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.partial"))


# ------------------------------------------------------------------------------------------ the repair at a start


def label_png(tmp_path: Path, name: str, value: int) -> Path:
    mask = np.zeros(xray_picture().shape, np.uint8)
    mask[10:40, 10:40] = value
    return write_png(mask, tmp_path / name)


def test_a_start_mends_what_a_crash_left(tmp_path, caplog):
    """Each leftover a kill can leave, planted as the crash would leave it, then the datastore started again."""
    studies, uploads = tmp_path / "studies", tmp_path / "uploads"
    studies.mkdir()
    uploads.mkdir()
    write_png(xray_picture(), studies / "xray.png")
    write_png(xray_picture(seed=5), studies / "chest.png")
    store = GatedLocalDatastore(str(studies), keep_versions=5, extensions=["*.png"])
    first, second = label_png(uploads, "first.png", 1), label_png(uploads, "second.png", 2)
    store.save_label("xray", str(first), "final", {"question": "Where?"})
    store.save_label("xray", str(second), "final", {})
    store.save_label("chest", str(first), "final", {})
    final, versions = studies / "labels" / "final", studies / ".versions" / "xray"
    kept = sorted(versions.iterdir())
    assert [p.suffix for p in kept] == [".json", ".png"]

    # a save cut off while writing: a partial the index never recorded (torn: half of a label)
    torn = final / ".xray.png.partial"
    torn.write_bytes(first.read_bytes()[:100])
    # a save cut off after its commit (the index records the new file) and before the rename
    index_path = studies / "datastore_v2.json"
    index = json.loads(index_path.read_text())
    index["objects"]["chest"]["labels"]["final"]["info"]["saved_sha256"] = sha256(second.read_bytes())
    index_path.write_text(json.dumps(index))
    (final / ".chest.png.partial").write_bytes(second.read_bytes())
    # an index write cut off (MONAI Label's name and ours)
    (studies / "datastore_v2.json.partial").write_text('{"name": "new-dat')
    (studies / ".datastore_v2.json.partial").write_text('{"objects": {')
    # a version whose record was never written; a record whose version file is gone; a link to the current label
    # made just before a crash; a version write cut off
    orphan = versions / "20250101T000000000000Z_label-final.png"
    orphan.write_bytes(first.read_bytes())
    (versions / "20250102T000000000000Z_image.json").write_text(
        json.dumps({"file": "20250102T000000000000Z_image.png"})
    )
    os.link(final / "xray.png", versions / "20250103T000000000000Z_label-final.png")
    (versions / ".20250104T000000000000Z_label-final.json.partial").write_text("{")

    with caplog.at_level(logging.WARNING, logger="lib.datastore"):
        store = GatedLocalDatastore(str(studies), keep_versions=5, extensions=["*.png"])
    repaired = [r.getMessage() for r in caplog.records if "Datastore repair at start" in r.getMessage()]

    assert partials_in(studies) == []
    assert (final / "xray.png").read_bytes() == second.read_bytes()  # the earlier label, whole
    assert (final / "chest.png").read_bytes() == second.read_bytes()  # the committed save, finished
    assert store.get_label_info("chest", "final")["saved_sha256"] == sha256(second.read_bytes())
    listed = {entry["file"]: entry for entry in store.get_image_info("xray")["versions"]}
    assert set(listed) == {kept[1].name, orphan.name}  # the orphan got a record; the stray link and record went
    assert listed[orphan.name]["reason"].startswith("found at a start without its record")
    assert sorted(store.list_images()) == ["chest", "xray"] and store.get_label_uri("xray", "final")
    assert len(repaired) == 8, repaired  # one line per thing: 2 partial labels, 2 partial indexes, 4 in versions
    assert not any("Where?" in line for line in repaired)  # ids and places, never a label's info


def test_an_unreadable_index_is_kept_aside_and_the_files_indexed_again(tmp_path):
    write_png(xray_picture(), tmp_path / "xray.png")
    (tmp_path / "datastore_v2.json").write_text('{"name": "new-dataset", "objects": {"xr')  # cut off mid-write
    store = GatedLocalDatastore(str(tmp_path), keep_versions=2, extensions=["*.png"])
    assert store.list_images() == ["xray"]
    assert len(list(tmp_path.glob(".datastore_v2.json.unreadable-*"))) == 1  # kept for the admin, not deleted


def test_every_file_the_datastore_writes_is_0640(tmp_path):
    """One mode whatever the file came from (an inference result's temporary file is 0600, an upload 0644)."""
    studies = tmp_path / "studies"
    studies.mkdir()
    write_png(xray_picture(), studies / "xray.png")
    store = GatedLocalDatastore(str(studies), keep_versions=2, extensions=["*.png"])
    private, shared = label_png(tmp_path, "private.png", 1), label_png(tmp_path, "shared.png", 2)
    private.chmod(0o600)
    shared.chmod(0o644)
    store.save_label("xray", str(private), "original", {})
    store.save_label("xray", str(shared), "final", {})
    store.save_label("xray", str(private), "final", {})
    picture = write_png(xray_picture(seed=9), tmp_path / "new.png")
    store.add_image("new", str(picture), {})
    written = [p for p in studies.rglob("*") if p.is_file() and p not in (studies / "xray.png", studies / ".lock")]
    assert len(written) == 6 and {oct(p.stat().st_mode & 0o777) for p in written} == {"0o640"}


# ------------------------------------------------------------------------------- the server killed during a save


def write_label(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    label = np.zeros(GRID, np.uint8)
    for _ in range(40):  # boxes of classes 1-3: a label, and two saves that differ everywhere they drew
        x, y, z = rng.integers(0, 400), rng.integers(0, 400), rng.integers(0, 150)
        label[x : x + 100, y : y + 100, z : z + 40] = rng.integers(1, 4)
    nibabel.save(nibabel.Nifti1Image(label, np.eye(4)), str(path))  # .nii: stored as sent, 52 MB to write
    return path


def label_folder_state(folder: Path) -> dict:
    """Each entry's (size, mtime, inode): any write, rename or removal changes it."""
    state = {}
    for entry in os.scandir(folder) if folder.is_dir() else ():
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # renamed away between listing and stat
            continue
        state[entry.name] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return state


class Save(threading.Thread):
    """PUT /datastore/label in the background; `answered` once the server said 200."""

    def __init__(self, url: str, label: Path):
        super().__init__(daemon=True)
        self.url, self.label, self.status = url, label, None

    def run(self):
        try:
            with open(self.label, "rb") as stream:
                self.status = requests.put(
                    f"{self.url}/datastore/label",
                    params={"image": IMAGE_ID, "tag": "final"},
                    files={"label": (self.label.name, stream), "params": (None, "{}")},
                    timeout=300,
                ).status_code
        except requests.RequestException:  # the server was killed
            pass

    @property
    def answered(self) -> bool:
        return self.status == 200


def save_and_watch(url: str, label: Path, label_dir: Path, kill=None) -> tuple[Save, dict]:
    """Starts a save and watches the label folder; returns the save and the seconds from its start to each moment
    seen: `change` (the folder's first change: the write begins), `install` (another file under the label's name),
    `end` (the answer). `kill(seen, now)` is asked every millisecond until it says it killed the server."""
    before = label_folder_state(label_dir)
    name = f"{IMAGE_ID}.nii"
    save = Save(url, label)
    started, started_wall = time.monotonic(), time.time()
    save.start()
    seen: dict = {"start": 0.0}
    while save.is_alive():
        now = time.monotonic() - started
        state = label_folder_state(label_dir)
        if "change" not in seen and state != before:
            seen["change"] = now
        if "install" not in seen and name in state and state[name][2] != before.get(name, (0, 0, None))[2]:
            seen["install"] = now
        if kill is not None and kill(seen, now):
            break
        time.sleep(0.001)
    save.join(120)
    seen.setdefault("end", time.monotonic() - started)
    if "install" not in seen and "change" in seen and kill is None:
        seen.update(install_seen_afterwards(label_dir / name, before.get(name), started_wall, seen))
    return save, seen


def install_seen_afterwards(label: Path, before: tuple | None, started_wall: float, seen: dict) -> dict:
    """When the rename fell between two looks (a busy machine can leave the watcher unscheduled for the few
    milliseconds from the rename to the answer), its moment from the new file's ctime (a rename sets it)."""
    try:
        stat = label.stat()
    except FileNotFoundError:
        return {}
    if before is not None and stat.st_ino == before[2]:
        return {}
    return {"install": min(max(stat.st_ctime_ns / 1e9 - started_wall, seen["change"]), seen["end"])}


@pytest.mark.server
@pytest.mark.slow
def test_a_server_killed_during_a_save_loses_no_label(tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    nibabel.save(nibabel.Nifti1Image(np.zeros(GRID, np.uint8), np.eye(4)), str(studies / f"{IMAGE_ID}.nii.gz"))
    saves = [write_label(tmp_path / "first.nii", seed=1), write_label(tmp_path / "second.nii", seed=2)]
    content = {sha256(p.read_bytes()): p for p in saves}
    args = ["--conf", "demo", "true", "--conf", "model_dir", str(tmp_path / "model"), "--conf", "keep_versions", "30"]
    server = DefaultStart(tmp_path, studies=studies, args=args).start()
    label_dir = studies / "labels" / "final"
    answered: list[str] = []  # the SHA-256 of each save the server answered with 200, in order
    try:
        first, _ = save_and_watch(server.url, saves[0], label_dir)
        assert first.answered, first.status
        answered.append(sha256(saves[0].read_bytes()))
        second, seen = save_and_watch(server.url, saves[1], label_dir)  # measured: when the write begins and ends
        assert second.answered and {"change", "install"} <= set(seen), (second.status, seen)
        answered.append(sha256(saves[1].read_bytes()))
        writing, finishing = seen["install"] - seen["change"], seen["end"] - seen["install"]
        # (what, the moment it is counted from, seconds after it): spread over the whole save, most of them over the
        # write of the new file, the rest from its rename to the answer and after
        moments = [("reading the upload", "start", 0.5 * seen["change"])]
        moments += [(f"writing, {f:.0%}", "change", f * writing) for f in (0, 0.3, 0.6, 0.9)]
        moments += [("renamed", "install", 0), ("recording", "install", 0.5 * finishing), ("answered", "end", 0)]
        outcomes = []
        for what, anchor, delay in moments:
            sending = next(p for sha, p in content.items() if sha != answered[-1])

            def kill(seen, now, anchor=anchor, delay=delay):
                if anchor not in seen or now - seen[anchor] < delay:
                    return False
                server.kill_server()
                return True

            save, _ = save_and_watch(server.url, sending, label_dir, kill)
            if server.process.poll() is None:  # the save ended before its moment came: killed now
                server.kill_server()
            if save.answered:
                answered.append(sha256(sending.read_bytes()))
            left = partials_in(studies)
            server.start()
            found = check_after_restart(server.url, studies, content, answered)
            outcomes.append(f"killed {what}: answered={save.answered}, left={left}, label after restart={found}")
        print("\n".join(outcomes))
    finally:
        server.stop()
    print("\n".join(line for line in server.log_path.read_text().splitlines() if "Datastore repair at start" in line))


def check_after_restart(url: str, studies: Path, content: dict, answered: list[str]) -> str:
    label = requests.get(f"{url}/datastore/label", params={"label": IMAGE_ID, "tag": "final"}, timeout=60)
    assert label.status_code == 200, label.text  # the final label is there (MONAI Label lost it: 404)
    current = sha256(label.content)
    assert current in content, "the final label is none of the saves: torn"
    voxels = np.asarray(nibabel.Nifti1Image.from_bytes(label.content).dataobj)
    assert np.array_equal(voxels, np.asarray(nibabel.load(str(content[current])).dataobj))  # whole, voxel for voxel
    listing = requests.get(f"{url}/datastore/", params={"output": "all"}, timeout=60)
    assert listing.status_code == 200 and IMAGE_ID in listing.json()["objects"]
    info = requests.get(f"{url}/datastore/label/info", params={"label": IMAGE_ID, "tag": "final"}, timeout=60).json()
    assert info["saved_sha256"] == current  # the index records the file that is there
    versions = requests.get(f"{url}/datastore/image/info", params={"image": IMAGE_ID}, timeout=60).json()["versions"]
    kept = {sha256((studies / ".versions" / IMAGE_ID / v["file"]).read_bytes()) for v in versions}
    lost = [sha for sha in answered if sha != current and sha not in kept]
    assert not lost, f"{len(lost)} answered save(s) neither current nor kept as a version"
    assert partials_in(studies) == []  # the start cleaned up
    return content[current].name
