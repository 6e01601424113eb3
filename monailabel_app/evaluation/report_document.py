"""A report as a list of blocks, written once and rendered twice: Markdown (to read in a repository) and one
self-contained HTML file (pictures inlined as data URIs) a reviewer can open anywhere, offline.

Text may hold `code` spans (backticks); everything else is literal: HTML renders it escaped.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

_CODE_SPAN = re.compile(r"`([^`]+)`")


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: Sequence[str]


@dataclass
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass
class Picture:
    path: str  # relative to the report's folder
    caption: str


@dataclass
class Pictures:
    """Several pictures side by side in HTML (one after another in Markdown)."""

    items: Sequence[Picture] = field(default_factory=list)


Block = Union[Heading, Paragraph, Bullets, Table, Picture, Pictures]


def render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            out += [block.text, ""]
        elif isinstance(block, Bullets):
            out += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            out += ["| " + " | ".join(_md_cell(cell) for cell in block.header) + " |"]
            out += ["|" + "---|" * len(block.header)]
            out += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in block.rows] + [""]
        elif isinstance(block, Picture):
            out += [_md_picture(block), ""]
        elif isinstance(block, Pictures):
            out += [_md_picture(item) for item in block.items] + [""]
    return "\n".join(out).rstrip("\n") + "\n"


def render_html(blocks: Sequence[Block], title: str, folder: Path) -> str:
    """One HTML page; pictures are read from `folder` and inlined, so the file can be mailed or archived alone."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline(cell)}</th>" for cell in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Picture):
            body.append(_figure(block, folder))
        elif isinstance(block, Pictures):
            body.append('<div class="row">' + "".join(_figure(item, folder) for item in block.items) + "</div>")
    return _PAGE.format(title=html.escape(title), body="\n".join(body))


def _md_picture(picture: Picture) -> str:
    alt = picture.caption.replace("[", "(").replace("]", ")").replace("\n", " ")
    return f"![{alt}]({picture.path})"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _inline(text: str) -> str:
    parts = _CODE_SPAN.split(str(text))
    return "".join(f"<code>{html.escape(part)}</code>" if odd else html.escape(part) for odd, part in _alternate(parts))


def _alternate(parts: list[str]):
    return ((index % 2 == 1, part) for index, part in enumerate(parts))


def _figure(picture: Picture, folder: Path) -> str:
    path = Path(folder) / picture.path
    caption = f"<figcaption>{_inline(picture.caption)}</figcaption>"
    if not path.is_file():
        return f"<figure><p>(missing picture {html.escape(picture.path)})</p>{caption}</figure>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(picture.caption)}" src="data:image/png;base64,{data}">{caption}</figure>'


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
thead {{ background: #f3f3f3; }}
figure {{ margin: 0.5em; display: inline-block; vertical-align: top; max-width: 100%; }}
figure img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.85em; color: #555; max-width: 40em; }}
.row {{ display: flex; flex-wrap: wrap; }} .row figure {{ flex: 1 1 20em; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
</style></head>
<body>
{body}
</body></html>
"""
