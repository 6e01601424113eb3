"""Publishing retrained reasoners: the link always names a whole folder; two versions are kept for rolling back."""

import os
import time

from monailabel_app.reasoning.model_store import publish_reasoner, published_reasoner


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


def test_a_published_reasoner_names_its_version_and_weights_digest(tmp_path):
    import hashlib

    from monailabel_app.grounding.service import GroundingService
    from monailabel_app.grounding.settings import GroundingSettings
    from monailabel_app.reasoning.identity import describe_reasoner

    model_dir = tmp_path / "model"
    link = publish_reasoner(trained_folder(tmp_path, "run1", "w1"), model_dir, "20261201-0100", "/models/base")
    file_digest = hashlib.sha256(b"w1").hexdigest()
    expected = hashlib.sha256(f"model.safetensors {file_digest}".encode()).hexdigest()
    assert describe_reasoner(str(link), "published") == {
        "path": str(link),
        "source": "published",
        "version": "20261201-0100",
        "sha256": expected,
    }
    served = GroundingService(GroundingSettings(reasoner="/models/base"), str(model_dir))
    assert served.reasoner_identity()["source"] == "published" and served.reasoner_path() == str(link)
    assert "--conf serve_published false" in served.startup_report()
    configured = GroundingService(GroundingSettings(reasoner="/models/base", serve_published=False), str(model_dir))
    assert configured.reasoner_path() == "/models/base" and configured.reasoner_identity()["source"] == "configured"
    assert "is not served" in configured.startup_report()
