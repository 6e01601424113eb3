"""Corrective clicks refine the reasoner's answer without asking it again (`grounding/pipeline.py`, `clicks.py`,
`answer_cache.py`), with the real LiteMedSAM: a background click on a second bright structure that the answer's box
took in removes it; the clicks that came with the question only chose the slice; the answer is reused only for the
same picture, prompt and serving reasoner, from a bounded cache; clicks are checked against the image's grid and name
the slice in the image's own order (both clients send it so: docs/pacs.md, What we found about OHIF). A clinician's clicks
on an answer accumulate, so OHIF's Run with *background* chosen (the background clicks in both lists, no foreground
click) removes what it should and keeps the earlier foreground click; a click that contradicts another is refused."""

from __future__ import annotations

import numpy as np
import pytest

from monailabel_app.core.errors import RequestError
from monailabel_app.demo.sample_studies import CT_LESION, CT_SHAPE, Lesion, ct_slice, write_ct
from monailabel_app.grounding.answer_cache import AnswerCache, CachedAnswer
from monailabel_app.grounding.clicks import (
    MAX_CLICKS,
    Click,
    ClickMemory,
    VoxelClicks,
    box_with_clicks,
    parse_clicks,
)
from monailabel_app.grounding.image_grounding import ground_image
from monailabel_app.grounding.pipeline import GroundingPipeline
from monailabel_app.imaging.medical_image import read_medical_image
from monailabel_app.imaging.windowing import to_display_rgb
from monailabel_app.segmentation.factory import build_segmenter
from tests.grounding.test_grounding_pipeline import ReplayReasoner, answer

QUESTION = "Which finding explains the raised inflammatory markers?"
HEIGHT, WIDTH = CT_SHAPE[1:]
NEIGHBOUR = Lesion(cx=52, cy=40, rx=9, ry=8)  # as bright as the lesion, just left of it
TOO_WIDE = (40, 28, 94, 51)  # takes in the lesion and its neighbour
ON_LESION = ((80, 40), (85, 42))


@pytest.fixture(scope="module")
def segmenter():
    return build_segmenter("litemedsam")


@pytest.fixture(scope="module")
def picture():
    hu = ct_slice(seed=3)
    hu[NEIGHBOUR.mask(HEIGHT, WIDTH)] = 220.0
    return to_display_rgb(hu, "soft_tissue")


def dice(mask: np.ndarray, truth: np.ndarray) -> float:
    return 2.0 * np.logical_and(mask, truth).sum() / (mask.sum() + truth.sum())


def over_segmenting(segmenter) -> tuple[GroundingPipeline, ReplayReasoner]:
    reasoner = ReplayReasoner(answer(TOO_WIDE, *ON_LESION), shrink=1.0)
    return GroundingPipeline(reasoner, segmenter, think=True), reasoner


def test_a_background_click_removes_what_the_answer_took_in_without_asking_the_reasoner(segmenter, picture):
    pipeline, reasoner = over_segmenting(segmenter)
    truth, neighbour = CT_LESION.mask(HEIGHT, WIDTH), NEIGHBOUR.mask(HEIGHT, WIDTH)
    first = pipeline.ground(picture, QUESTION, clicks=())
    assert len(reasoner.prompts) == 1 and first.reasoner_called and first.refined_by is None
    assert first.mask[neighbour].mean() > 0.5  # the answer's box took the neighbour in

    refined = pipeline.ground(picture, QUESTION, clicks=(Click(NEIGHBOUR.cx, NEIGHBOUR.cy, False),))
    print(f"Dice before {dice(first.mask, truth):.3f}, after one background click {dice(refined.mask, truth):.3f}")
    assert len(reasoner.prompts) == 1 and refined.reasoner_called is False  # 0 reasoner calls for the refinement
    assert refined.mask[neighbour].mean() < 0.05 and dice(refined.mask, truth) >= dice(first.mask, truth) + 0.1
    assert refined.reasoning == first.reasoning == "bright focal lesion" and refined.box == first.box
    assert refined.to_json()["refined_by_clicks"] == {"foreground": [], "background": [[52, 40]]}
    assert refined.refined_box[0] > NEIGHBOUR.cx  # the click moved the box's left edge past itself
    assert first.mask[neighbour].mean() > 0.5  # the cached answer itself is unchanged


def test_the_click_that_asked_the_question_only_chose_the_slice(segmenter, picture):
    pipeline, reasoner = over_segmenting(segmenter)
    chooser = Click(82, 41, True)
    first = pipeline.ground(picture, QUESTION, clicks=(chooser,))
    assert first.clicks_chose_slice == 1 and first.refined_by is None
    again = pipeline.ground(picture, QUESTION, clicks=(chooser,))  # Slicer resends it with every later click
    assert again.refined_by is None and np.array_equal(again.mask, first.mask) and len(reasoner.prompts) == 1
    background = Click(NEIGHBOUR.cx, NEIGHBOUR.cy, False)
    refined = pipeline.ground(picture, QUESTION, clicks=(chooser, background))
    assert refined.refined_by == (background,) and refined.clicks_chose_slice == 1 and len(reasoner.prompts) == 1
    with pytest.raises(RequestError, match="was a foreground click"):  # the chooser's point as a background click
        pipeline.ground(picture, QUESTION, clicks=(chooser, Click(82, 41, False)))


def test_an_answer_is_reused_only_for_the_same_picture_prompt_and_reasoner(segmenter, picture):
    pipeline, reasoner = over_segmenting(segmenter)
    click = (Click(NEIGHBOUR.cx, NEIGHBOUR.cy, False),)
    pipeline.ground(picture, QUESTION, clicks=())
    pipeline.ground(picture, "Where is the abscess?", clicks=click)  # another question
    pipeline.ground(255 - picture, QUESTION, clicks=click)  # another picture (slice, window or image)
    pipeline.ground(picture, QUESTION, think=False, clicks=click)  # another prompt
    assert len(reasoner.prompts) == 4
    pipeline.ground(picture, QUESTION)  # the auto-segmentation panel always asks
    assert len(reasoner.prompts) == 5
    retrained = ReplayReasoner(answer(TOO_WIDE, *ON_LESION), shrink=1.0)
    pipeline.use_reasoner(retrained)  # a retrained model now serves: the old answers are never reused
    pipeline.ground(picture, QUESTION, clicks=click)
    assert len(reasoner.prompts) == 5 and len(retrained.prompts) == 1
    pipeline.use_reasoner(retrained)  # the same one again keeps its answers
    assert pipeline.ground(picture, QUESTION, clicks=click).reasoner_called is False


def test_the_answer_cache_is_bounded_and_forgets_the_least_recently_used(picture):
    cache = AnswerCache(max_entries=2)
    keys = [AnswerCache.key(picture, f"prompt {n}") for n in range(3)]
    for key in keys:
        cache.put(key, CachedAnswer(result=None, chose_slice=frozenset(), generation=0))
        if key == keys[1]:
            assert cache.get(keys[0], 0) is not None  # used: kept over keys[1]
    assert len(cache) == 2 and cache.get(keys[1], 0) is None and cache.get(keys[0], 0) is not None
    assert cache.get(keys[2], 1) is None  # another reasoner generation


def test_clicks_move_the_box():
    box, keep = (10, 10, 50, 30), [(40, 20)]
    assert box_with_clicks(box, keep, (Click(60, 20, True),)) == (10, 10, 60, 30)  # extended to a click outside
    assert box_with_clicks(box, keep, (Click(20, 20, False),)) == (21, 10, 50, 30)  # the cut that keeps the point
    assert box_with_clicks(box, [(40, 20), (12, 20)], (Click(20, 20, False),)) == (10, 10, 50, 30)  # no cut keeps both
    assert box_with_clicks(box, keep, (Click(5, 5, False),)) == box  # outside: nothing to cut
    assert box_with_clicks(None, [], (Click(5, 5, False),)) is None
    assert box_with_clicks(None, [], (Click(5, 6, True), Click(9, 3, True))) == (5, 3, 9, 6)


def test_clicks_are_checked_against_the_grid_and_name_the_slice():
    clicks = parse_clicks([[3, 4, 2], [5, 6, 7]], [[1, 1, 7]], WIDTH, HEIGHT, 12)
    assert clicks.slice_index() == 7 and clicks.on_slice(7) == (Click(5, 6, True), Click(1, 1, False))
    assert parse_clicks([], [[1, 1, 3]], WIDTH, HEIGHT, 12).slice_index() == 3  # only background: its slice
    assert parse_clicks([[3, 4]], [], WIDTH, HEIGHT, None).on_slice(None) == (Click(3, 4, True),)
    bad = [
        ([[3, 4, 12]], "outside the volume"),
        ([[WIDTH, 4, 1]], "outside the image"),
        ([[3.5, 4, 1]], "whole numbers"),
        ([[True, 4, 1]], "numbers"),
        ([[float("nan"), 4, 1]], "numbers"),
        ([[3, 4]], "needs its slice"),
        ([[3, 4, 1, 0]], "a point"),
        ("[[3, 4, 1]]", "a list"),
        ([[1, 1, 1]] * (MAX_CLICKS + 1), "at most"),
    ]
    for foreground, why in bad:
        with pytest.raises(RequestError, match=why):
            parse_clicks(foreground, [], WIDTH, HEIGHT, 12)
    with pytest.raises(RequestError, match="2D picture"):
        parse_clicks([[3, 4, 1]], [], WIDTH, HEIGHT, None)


def test_on_a_volume_the_clicks_choose_the_slice_and_clicks_elsewhere_are_left_aside(segmenter, tmp_path):
    image = read_medical_image(str(write_ct(tmp_path / "ct.nii.gz")))
    pipeline, reasoner = over_segmenting(segmenter)
    k = CT_SHAPE[0] // 2
    clicks = VoxelClicks(foreground=((80, 40, k - 1), (80, 40, k)))
    grounded = ground_image(lambda: pipeline, image, QUESTION, None, "soft_tissue", clicks=clicks)
    assert grounded.slice_index == k and grounded.label[k].any() and not np.delete(grounded.label, k, axis=0).any()
    assert grounded.result.clicks_chose_slice == 1 and any("other slices" in w for w in grounded.result.warnings)
    refine = VoxelClicks(foreground=((80, 40, k),), background=((20, 20, k),))
    again = ground_image(lambda: pipeline, image, QUESTION, None, "soft_tissue", clicks=refine)
    assert again.result.reasoner_called is False and again.result.refined_by == (Click(20, 20, False),)
    assert len(reasoner.prompts) == 1


def test_ohif_s_run_with_background_chosen_removes_what_it_should_and_keeps_the_earlier_foreground_click(
    segmenter, tmp_path
):
    """OHIF sends `foreground = points[chosen segment]`, `background = points['background']`: with *background*
    chosen both lists hold the background clicks and the earlier foreground click is not sent at all."""
    image = read_medical_image(str(write_ct(tmp_path / "ct.nii.gz")))
    pipeline, reasoner = over_segmenting(segmenter)
    k = CT_SHAPE[0] // 2
    height, width = image.array.shape[1:3]
    asked = ground_image(lambda: pipeline, image, QUESTION, k, "soft_tissue")  # Auto-Segmentation's answer
    first = asked.result.mask
    neighbour = NEIGHBOUR.mask(HEIGHT, WIDTH) & first  # what the too-wide box took in beside the lesion

    def point_prompts(foreground, background):
        clicks = parse_clicks(foreground, background, width, height, image.num_slices)
        return ground_image(lambda: pipeline, image, QUESTION, None, "soft_tissue", clicks=clicks)

    on_lesion, off_target = [85, 42, k], [NEIGHBOUR.cx, NEIGHBOUR.cy, k]
    point_prompts([on_lesion], [])  # the target segment chosen: one foreground click
    removed = point_prompts([off_target], [off_target])  # then *background* chosen: OHIF's lists
    result = removed.result
    assert result.refined_by == (Click(85, 42, True), Click(NEIGHBOUR.cx, NEIGHBOUR.cy, False)), result.refined_by
    assert result.reasoner_called is False and len(reasoner.prompts) == 1
    print(f"neighbour pixels in the mask: {int(neighbour.sum())} before, {int(result.mask[neighbour].sum())} after")
    assert neighbour.sum() > 50 and result.mask[neighbour].mean() < 0.05  # the wrong region went
    truth = CT_LESION.mask(HEIGHT, WIDTH)
    assert dice(result.mask, truth) > dice(first, truth) and result.mask[42, 85]  # the lesion kept, the click in it
    assert parse_clicks([off_target], [off_target], width, height, image.num_slices).read_as_background

    again = point_prompts([on_lesion], [off_target])  # the target chosen again: OHIF sends both lists as they are
    assert again.result.refined_by == result.refined_by and np.array_equal(again.result.mask, result.mask)


def test_clicks_accumulate_per_clinician_and_a_contradiction_is_refused_without_changing_them(segmenter, picture):
    pipeline, reasoner = over_segmenting(segmenter)
    pipeline.ground(picture, QUESTION, clicks=())
    foreground, background = Click(85, 42, True), Click(NEIGHBOUR.cx, NEIGHBOUR.cy, False)
    pipeline.ground(picture, QUESTION, clicks=(foreground,), asker="ann")
    both = pipeline.ground(picture, QUESTION, clicks=(background,), asker="ann")
    assert both.refined_by == (foreground, background)
    theirs = pipeline.ground(picture, QUESTION, clicks=(background,), asker="bob")  # another clinician's own clicks
    assert theirs.refined_by == (background,)
    with pytest.raises(RequestError, match="was a foreground click on this answer and now comes as a background"):
        pipeline.ground(picture, QUESTION, clicks=(Click(85, 42, False),), asker="ann")
    kept = pipeline.ground(picture, QUESTION, clicks=(), asker="ann")  # the refused click changed nothing
    assert kept.refined_by == (foreground, background) and np.array_equal(kept.mask, both.mask)
    pipeline.ground(picture, QUESTION)  # the question asked again (Auto-Segmentation): a new answer
    fresh = pipeline.ground(picture, QUESTION, clicks=(Click(85, 42, False),), asker="ann")
    assert fresh.refined_by == (Click(85, 42, False),) and len(reasoner.prompts) == 2


def test_a_point_in_both_lists_is_background_only_when_the_lists_are_the_same():
    read = parse_clicks([[5, 6, 2], [7, 8, 2]], [[7, 8, 2], [5, 6, 2]], WIDTH, HEIGHT, 12, asker="ann")
    assert read == VoxelClicks((), ((7, 8, 2), (5, 6, 2)), "ann", read_as_background=True)
    assert read.slice_index() == 2
    assert parse_clicks([[5, 6, 2], [7, 8, 2]], [[7, 8, 2], [5, 6, 2]], WIDTH, HEIGHT, 12).read_as_background
    assert not parse_clicks([[5, 6, 2]], [], WIDTH, HEIGHT, 12).read_as_background
    assert not parse_clicks([], [], WIDTH, HEIGHT, 12).read_as_background
    # a 2D picture's click, with or without z
    assert parse_clicks([[5, 5]], [[5, 5, 0]], WIDTH, HEIGHT, None).read_as_background
    with pytest.raises(RequestError, match=r"\[7, 8, 2\] is both a foreground and a background click"):
        parse_clicks([[5, 6, 2], [7, 8, 2]], [[7, 8, 2]], WIDTH, HEIGHT, 12)
    plain = parse_clicks([[5, 6, 2]], [[7, 8, 2]], WIDTH, HEIGHT, 12)
    assert plain.foreground == ((5, 6, 2),) and not plain.read_as_background


def test_the_click_memory_is_bounded_and_refuses_too_many_clicks_on_one_answer():
    memory = ClickMemory(max_entries=2)
    for n in range(3):
        memory.add(f"answer {n}", "", (Click(n, n, True),))
    assert len(memory) == 2 and memory.add("answer 0", "", ()) == ()  # the oldest went: nothing remembered
    many = tuple(Click(n, 0, False) for n in range(MAX_CLICKS))
    assert len(memory.add("answer 9", "", many)) == MAX_CLICKS
    with pytest.raises(RequestError, match=f"more than {MAX_CLICKS} background clicks"):
        memory.add("answer 9", "", (Click(0, 1, False),))
