"""A clinician's corrective clicks, as Slicer's and OHIF's point panels send them: `foreground` and `background`, each a
list of voxel indices [i, j, k] (column, row, slice) of the image (2D pictures: [i, j] or [i, j, 0]).

Checked at the boundary: a list of at most `MAX_CLICKS` points of 2 or 3 whole, finite numbers inside the image's grid;
anything else is refused with a RequestError that says which point is wrong.

Which kind: each list as it says, except that the same points in both lists are background clicks. That is how the
OHIF bundled with MONAI Label 0.8.5 sends a Run with the *background* segment chosen (`foreground` is the chosen
segment's clicks, `background` the background segment's: both the background clicks), leaving out the segment's own
earlier clicks; `ClickMemory` keeps those. A point that is in both lists while the lists differ is a contradiction
(a point can't be both in and out of the mask) and is refused.

Which slice: the request's `slice` when it sends one (Slicer's 2D point panel does); otherwise (OHIF, a 3D point
view) the slice of the latest foreground click, or of the latest background click when there is none: each client
appends a new click to the end of its list. Clicks on other slices are not prompts for this slice; the result says how
many were left aside.

Accumulated: the clicks a clinician made on an answer are remembered with it (`ClickMemory`, per answer and per
clinician), and each request's clicks join them, so a click sent once keeps acting until the question is asked again.
A click at a point that this clinician's earlier click on the same answer gave the other kind is refused (422): the
earlier click stays until the answer is asked for again.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

from monailabel_app.core.errors import RequestError

MAX_CLICKS = 64  # per list, and per kind on one answer: a person's corrections on one target, with room to spare
MEMORY_ENTRIES = 1024  # (answer, clinician) pairs remembered; the answers themselves are bounded (`answer_cache.py`)


@dataclass(frozen=True)
class Click:
    x: float  # column, in pixels of the slice
    y: float  # row
    foreground: bool


@dataclass(frozen=True)
class PointPrompt:
    """A point panel's request as it came: unchecked until the image's grid is known (`parse_clicks`). `asker`: the
    signed-in user ("" with sign-in off), whose earlier clicks on the answer these join."""

    foreground: Any = None
    background: Any = None
    asker: str = ""


@dataclass(frozen=True)
class VoxelClicks:
    """The request's clicks, checked, in the image's voxel indices, each in the kind it was read as."""

    foreground: tuple[tuple[int, int, Optional[int]], ...] = ()
    background: tuple[tuple[int, int, Optional[int]], ...] = ()
    asker: str = ""
    read_as_background: bool = False  # both lists held the same points: OHIF's Run with *background* chosen

    def __bool__(self) -> bool:
        return bool(self.foreground or self.background)

    def slice_index(self) -> Optional[int]:
        """The slice the clicks name: the latest foreground click's, else the latest background click's."""
        latest = self.foreground[-1] if self.foreground else self.background[-1] if self.background else None
        return None if latest is None else latest[2]

    def on_slice(self, k: Optional[int]) -> tuple[Click, ...]:
        """The clicks on slice `k` (every click of a 2D picture), foreground first, each list in its order."""
        chosen = [Click(i, j, True) for i, j, z in self.foreground if z == k or k is None]
        return tuple(chosen + [Click(i, j, False) for i, j, z in self.background if z == k or k is None])

    def count(self) -> int:
        return len(self.foreground) + len(self.background)


def parse_clicks(
    foreground: Any, background: Any, width: int, height: int, num_slices: Optional[int], asker: str = ""
) -> VoxelClicks:
    """`num_slices` None for a 2D picture. Both clients send indices of the volume as ITK stacks it (slices in order
    along the normal): Slicer's are its own volume's; OHIF's come from its volume's `worldToIndex`, whose slices are
    in that same order (docs/pacs.md, What we found about OHIF)."""
    lists = {}
    for name, raw in (("foreground", foreground), ("background", background)):
        lists[name] = tuple(_voxel(name, n, p, width, height, num_slices) for n, p in _items(name, raw))
    inside, outside = lists["foreground"], lists["background"]
    if _same_points(inside, outside):  # OHIF with *background* chosen: every click in both lists
        return VoxelClicks((), outside, asker, read_as_background=True)
    both = sorted(set(inside) & set(outside), key=inside.index)
    if both:
        raise RequestError(
            f"The point {_shown(both[0])} is both a foreground and a background click: a point is either in the mask "
            "or not. Remove one of the two clicks (OHIF: Clear Points with that segment chosen) and run again."
        )
    return VoxelClicks(inside, outside, asker)


def _same_points(inside, outside) -> bool:
    return bool(inside) and set(inside) == set(outside)


def merge_clicks(
    remembered: tuple[Click, ...], new: tuple[Click, ...], chose_slice: frozenset[Click] = frozenset()
) -> tuple[Click, ...]:
    """The clicks in effect on an answer: the remembered ones, then the new ones not among them (foreground first,
    each kind in the order made). A new click at a point remembered as the other kind (or that chose the slice as the
    other kind) is refused: it contradicts an earlier click, and which one the clinician means can't be known."""
    kinds = {(c.x, c.y): c.foreground for c in (*chose_slice, *remembered)}
    merged = list(remembered)
    for click in new:
        earlier = kinds.get((click.x, click.y))
        if earlier is None:
            kinds[(click.x, click.y)] = click.foreground
            merged.append(click)
        elif earlier != click.foreground:
            was, now = ("foreground", "background") if earlier else ("background", "foreground")
            raise RequestError(
                f"The point (column {_shown(click.x)}, row {_shown(click.y)}) was a {was} click on this answer and now "
                f"comes as a {now} click. Earlier clicks keep acting until the question is asked again: click a "
                f"point next to it, or run the question again (OHIF: Clear All Points, then Auto-Segmentation) to "
                "start over."
            )
    for kind in (True, False):
        if sum(c.foreground == kind for c in merged) > MAX_CLICKS:
            name = "foreground" if kind else "background"
            raise RequestError(f"This answer has more than {MAX_CLICKS} {name} clicks; run the question again.")
    return tuple([c for c in merged if c.foreground] + [c for c in merged if not c.foreground])


class ClickMemory:
    """The clicks each clinician has made on each answer (keyed by the answer's reference and the clinician), so a
    request that sends only some of them (OHIF's Run with *background* chosen sends no foreground click) keeps the
    others. Bounded (least recently used first) and thread-safe; in memory only, as the answers it refines are
    (`answer_cache.py`): an answer asked again is a new answer, with no clicks yet."""

    def __init__(self, max_entries: int = MEMORY_ENTRIES):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[Click, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def add(
        self, answer_ref: str, asker: str, new: tuple[Click, ...], chose_slice: frozenset[Click] = frozenset()
    ) -> tuple[Click, ...]:
        """Every click in effect on the answer for this clinician once `new` joins them (RequestError, and nothing
        remembered, when one contradicts an earlier click or one that chose the slice)."""
        key = (answer_ref, asker)
        with self._lock:
            merged = merge_clicks(self._entries.get(key, ()), new, chose_slice)
            self._entries[key] = merged
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return merged

    def __len__(self) -> int:
        return len(self._entries)


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_shown(v) for v in value if v is not None) + "]"
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _items(name: str, raw: Any) -> list[tuple[int, Any]]:
    if raw is None or raw == "":
        return []
    if not isinstance(raw, list):
        raise RequestError(f"{name} must be a list of points [i, j, k], got {type(raw).__name__}")
    if len(raw) > MAX_CLICKS:
        raise RequestError(f"{name} has {len(raw)} points; at most {MAX_CLICKS} are taken")
    return list(enumerate(raw))


def _voxel(name, n, point, width, height, num_slices) -> tuple[int, int, Optional[int]]:
    where = f"{name}[{n}]"
    if not isinstance(point, list) or len(point) not in (2, 3):
        raise RequestError(f"{where} must be a point [i, j, k] (or [i, j] on a 2D picture), got {str(point)[:60]}")
    values = []
    for value in point:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RequestError(f"{where} must hold numbers, got {str(point)[:60]}")
        if value != int(value):
            raise RequestError(f"{where} must be voxel indices (whole numbers), got {str(point)[:60]}")
        values.append(int(value))
    i, j = values[0], values[1]
    k = values[2] if len(values) == 3 else None
    if not (0 <= i < width and 0 <= j < height):
        raise RequestError(f"{where} = {values} is outside the image ({width} x {height} pixels)")
    if num_slices is None:
        if k not in (None, 0):
            raise RequestError(f"{where} = {values} names slice {k}, but this is a 2D picture")
        return i, j, None
    if k is None:
        raise RequestError(f"{where} = {values} needs its slice: [i, j, k] on a volume")
    if not 0 <= k < num_slices:
        raise RequestError(f"{where} = {values} is outside the volume (slices 0 to {num_slices - 1})")
    return i, j, k


def box_with_clicks(
    box: Optional[tuple[float, float, float, float]], keep: list[tuple[float, float]], clicks: tuple[Click, ...]
) -> Optional[tuple[float, float, float, float]]:
    """The answer's box, moved by the clicks. Box-trained segmenters (MedSAM, LiteMedSAM) follow the box far more than
    points, so a click that only joined the points barely changed the mask (docs/clinician.md, Correct with clicks):
    - a foreground click outside the box extends the box to it (no box: the foreground clicks' own box);
    - then each background click inside the box moves one edge just past it: of the four, the cut that keeps every
      point in `keep` (the answer's points, the foreground clicks) inside and the most area; when every cut would lose
      one, the box stays and the click acts as a negative point only."""
    foreground = [(c.x, c.y) for c in clicks if c.foreground]
    if box is None and not foreground:
        return None
    x1, y1, x2, y2 = box if box is not None else (*foreground[0], *foreground[0])
    for x, y in foreground:
        x1, y1, x2, y2 = min(x1, x), min(y1, y), max(x2, x), max(y2, y)
    inside = [*keep, *foreground]
    for click in clicks:
        if click.foreground or not (x1 <= click.x <= x2 and y1 <= click.y <= y2):
            continue
        cuts = [
            (click.x + 1, y1, x2, y2),
            (x1, y1, click.x - 1, y2),
            (x1, click.y + 1, x2, y2),
            (x1, y1, x2, click.y - 1),
        ]
        kept = [c for c in cuts if c[0] < c[2] and c[1] < c[3] and all(_within(p, c) for p in inside)]
        if kept:
            x1, y1, x2, y2 = max(kept, key=lambda c: (c[2] - c[0]) * (c[3] - c[1]))
    return x1, y1, x2, y2


def _within(point: tuple[float, float], box: tuple[float, float, float, float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]
