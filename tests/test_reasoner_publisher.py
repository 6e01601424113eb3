"""Publishing retrained reasoners: the link always names a whole folder; two versions are kept for rolling back."""

import os
import time

from monailabel_app.reasoner_publisher import published_reasoner, publish_reasoner


def trained_folder(root, name, weights):
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_text(weights)
    (folder / "model.safetensors").chmod(0o600)  # as safetensors writes it
    return folder


def test_publish_swaps_the_link_and_keeps_the_previous_version(tmp_path):
    model_dir = tmp_path / "model"
    assert published_reasoner(model_dir) is None
    for number in (1, 2, 3):
        link = publish_reasoner(trained_folder(tmp_path, f"run{number}", f"w{number}"), model_dir, f"v{number}")
        time.sleep(0.01)  # distinct modification times for the pruning order
        assert link == published_reasoner(model_dir) == model_dir / "reasoner"
        assert (link / "model.safetensors").read_text() == f"w{number}"
        assert os.readlink(link) == os.path.join("reasoner_versions", f"v{number}")
        assert (link / "model.safetensors").stat().st_mode & 0o044 == 0o044  # readable by a server of another user
    assert sorted(p.name for p in (model_dir / "reasoner_versions").iterdir()) == ["v2", "v3"]
    assert not (tmp_path / "runs" / "run3").exists()  # moved, not copied
