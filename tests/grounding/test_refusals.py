"""The server's recent refusals (`grounding/refusals.py`), which OHIF's answer panel shows because OHIF itself says only
"Failed to Run Segmentation": the newest about an image or study, asked by one user; bounded; ordered with the
answer log's ids, so a refusal older than the newest answer can be told apart."""

from __future__ import annotations

from monailabel_app.grounding.answer_log import AnswerLog
from monailabel_app.grounding.refusals import RecentRefusals


def test_the_newest_refusal_of_one_user_about_one_study():
    refusals = RecentRefusals(keep=3)
    refusals.add("question is empty", "implicit_query", "1.2.3", "9.8", "ann")
    bobs = refusals.add("clicks contradict", "implicit_query_slice", "1.2.3", "9.8", "bob")
    assert refusals.latest(study_uid="9.8", asked_by="ann")["message"] == "question is empty"
    assert refusals.latest(study_uid="9.8")["refusal_id"] == bobs  # no user named: anyone's (sign-in off, admins)
    assert refusals.latest(image_id="4.5.6") is None and refusals.latest(study_uid="9.8", asked_by="cy") is None
    for n in range(3):  # the oldest go
        refusals.add(f"refusal {n}", None, "other", None, "bob")
    assert refusals.latest(study_uid="9.8") is None
    assert len(refusals.add("x" * 5000, None, None, None, None)) == len(bobs)
    assert len(refusals.latest()["message"]) == 1000


def test_refusal_ids_and_answer_ids_compare_by_time(tmp_path):
    log = AnswerLog(tmp_path / "answers")
    first = log.refusals.add("refused", None, "1.2.3", None, None)
    answered = log.add({"image_id": "1.2.3", "question": "q"})
    later = log.refusals.add("refused again", None, "1.2.3", None, None)
    assert first < answered < later
