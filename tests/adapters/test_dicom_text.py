"""Free text fitted to a DICOM VR (lib/pacs/dicom_text.py): the controls a VR can't hold go, and a value is cut to
its limit in UTF-8 bytes (as dciodvfy counts) at a character boundary, and only when it is over."""

from __future__ import annotations

import pytest

from lib.pacs.dicom_text import MAX_BYTES, clean_strings, clean_text, fit_text, shorten

CONTROLS = "".join(map(chr, range(0x20))) + "\x7f" + "".join(map(chr, range(0x80, 0xA0)))


@pytest.mark.parametrize("vr", ["SH", "LO", "UC"])
def test_a_one_line_value_keeps_no_control_and_no_backslash(vr):
    value = clean_text(f"a{CONTROLS}b\\c\u202ed\u2066e", vr)
    assert value.startswith("a") and value.endswith("b/cde")
    assert set(value[1:-5]) == {" "}  # TAB, LF, VT, FF, CR and NEL are spaces, the other controls are gone
    assert "\x1b" not in value


@pytest.mark.parametrize("vr", ["ST", "LT", "UT"])
def test_a_text_value_keeps_its_lines_and_nothing_else_of_the_controls(vr):
    value = clean_text(f"a{CONTROLS}b\\c\u202ed\ud800e", vr)
    assert value == "a" + " \n\n\x0c\r" + "\n" + "b\\cde"  # TAB a space; LF; VT as LF; FF; CR; NEL as LF


def test_non_ascii_long_string_is_cut_to_64_bytes_between_characters():
    for text in ("é" * 80, "a" + "é" * 80, "漢" * 30, "🫁" * 20):
        value = fit_text(text, "LO")
        assert len(value.encode("utf-8")) <= MAX_BYTES["LO"]
        assert value.endswith("…") and text.startswith(value[:-1])  # whole characters, the start of the text
        assert len(value.encode("utf-8")) > MAX_BYTES["LO"] - 4 - 3  # not cut more than one character short


def test_a_value_that_fits_is_not_cut():
    assert fit_text("é" * 32, "LO") == "é" * 32  # 64 bytes: exactly the limit
    assert fit_text("a" * 16, "SH") == "a" * 16
    assert fit_text("x" * 1024, "ST") == "x" * 1024
    assert fit_text("Which structure explains the dull note?", "LO") == "Which structure explains the dull note?"
    assert shorten("é" * 5, 10) == "é" * 5


def test_every_string_in_a_nested_value_is_cleaned_and_nothing_else_changes():
    cleaned = clean_strings({"q\x00": "a\x1bb", "n": [1, 2.5, None, True, {"v": "\x85c"}]}, "LT")
    assert cleaned == {"q": "ab", "n": [1, 2.5, None, True, {"v": "\nc"}]}


def test_a_vr_without_rules_is_refused():
    with pytest.raises(ValueError, match="CS"):
        clean_text("x", "CS")
