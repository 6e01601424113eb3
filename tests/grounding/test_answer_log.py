"""The answer log (every answer kept for audit, with its picture) and the picture of an answer, without a server."""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from monailabel_app.grounding.answer_log import ANSWER_ID, AnswerLog
from monailabel_app.grounding.answer_picture import BOX_COLOUR, MASK_TINT, draw_answer


def entry(n: int, image_id: str = "ct", study: str | None = None) -> dict:
    return {"question": f"question {n}", "reasoning": f"because {n}", "image_id": image_id, "study_uid": study}


def test_answers_come_back_newest_first_and_by_image_or_study(tmp_path):
    log = AnswerLog(tmp_path)
    ids = [log.add(entry(n, "ct" if n % 2 else "xray", "1.2.3" if n < 2 else None)) for n in range(4)]
    assert all(ANSWER_ID.match(i) for i in ids) and ids == sorted(ids)
    assert [e["question"] for e in log.recent(10)] == ["question 3", "question 2", "question 1", "question 0"]
    assert [e["question"] for e in log.recent(10, image_id="xray")] == ["question 2", "question 0"]
    assert [e["question"] for e in log.recent(10, study_uid="1.2.3")] == ["question 1", "question 0"]
    assert [e["answer_id"] for e in log.recent(1)] == [ids[-1]]
    reopened = AnswerLog(tmp_path)  # a restarted server reads its index from the folder
    assert [e["answer_id"] for e in reopened.recent(10, image_id="ct")] == [ids[3], ids[1]]


def test_only_the_newest_are_kept(tmp_path):
    log = AnswerLog(tmp_path, keep=3)
    ids = [log.add(entry(n), draw_answer(np.zeros((8, 8, 3), np.uint8))) for n in range(5)]
    assert [e["answer_id"] for e in log.recent(10)] == ids[:1:-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{i}{s}" for i in ids[2:] for s in (".json", ".png"))
    assert log.get(ids[0]) is None and log.picture_path(ids[0]) is None


@pytest.mark.parametrize(
    "bad", ["../x", "20261203T101500123456-1a2b3c4", "x" * 30, "", "20261203T101500123456-1A2B3C4D"]
)
def test_only_well_formed_ids_name_a_file(tmp_path, bad):
    log = AnswerLog(tmp_path)
    log.add(entry(0))
    (tmp_path / f"{bad.replace('/', '_')}.json").write_text(json.dumps({"question": "planted"}))
    assert log.get(bad) is None and log.picture_path(bad) is None


def test_the_picture_shows_mask_box_and_points():
    picture = np.full((100, 120, 3), 90, np.uint8)
    mask = np.zeros((100, 120), bool)
    mask[40:60, 50:70] = True
    png = np.asarray(Image.open(io.BytesIO(draw_answer(picture, mask, [30, 20, 90, 80], [[55, 45], [65, 55]]))))
    assert png.shape == (100, 120, 3)
    inside = png[50, 60].astype(int)  # between the points: tinted towards MASK_TINT
    assert inside[0] > 150 and inside[1] < 90 and tuple(png[5, 5]) == (90, 90, 90)
    assert tuple(png[20, 60]) == BOX_COLOUR and tuple(png[80, 60]) == BOX_COLOUR  # box's top and bottom edges
    assert tuple(png[45, 55]) not in ((90, 90, 90), MASK_TINT)  # a point is drawn over the picture


def test_large_pictures_are_scaled_down_with_their_drawing():
    png = Image.open(io.BytesIO(draw_answer(np.zeros((1536, 1024, 3), np.uint8), box=[100, 100, 900, 1400])))
    assert png.size == (512, 768)
    assert tuple(np.asarray(png)[50, 250]) == BOX_COLOUR  # the box's top edge at 100 / 2


def test_concurrent_answers_all_arrive_in_time_order(tmp_path):
    log = AnswerLog(tmp_path, keep=1000)
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda n: log.add(entry(n)), range(200)))
    assert [e["answer_id"] for e in log.recent(100)] == sorted(ids, reverse=True)[:100]
    assert len({e["answer_id"] for e in AnswerLog(tmp_path).recent(100)}) == 100


def test_answers_another_process_keeps_are_seen(tmp_path):
    server = AnswerLog(tmp_path)
    first = server.add(entry(0))
    batch = AnswerLog(tmp_path)  # MONAI Label's batch inference: a subprocess with its own log object
    time.sleep(0.01)  # a later folder time stamp
    second = batch.add(entry(1))
    assert [e["answer_id"] for e in server.recent(5)] == [second, first]
    third = server.add(entry(2))
    assert third > second and [e["answer_id"] for e in server.recent(5)] == [third, second, first]


def test_a_failed_write_leaves_nothing_half_written_and_the_log_goes_on(tmp_path, monkeypatch):
    from monailabel_app.grounding import answer_log as module

    log = AnswerLog(tmp_path / "answers")
    kept = log.add(entry(1), b"\x89PNG picture")

    def disk_full(path, record):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:  # the disk fills up between the picture and the record
        patched.setattr(module, "write_json_atomically", disk_full)
        with pytest.raises(OSError):
            log.add(entry(2), b"\x89PNG picture")
    assert sorted(p.name for p in (tmp_path / "answers").iterdir()) == [f"{kept}.json", f"{kept}.png"]
    assert [a["answer_id"] for a in log.recent()] == [kept]
    later = log.add(entry(3))
    assert [a["answer_id"] for a in log.recent()] == [later, kept]
    assert log.get(kept + "\n") is None and log.get(kept)["answer_id"] == kept  # the whole id, nothing after it
