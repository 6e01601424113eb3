"""The grounding prompt: a swappable template file with one `{question}` slot (docs/method.md §2).

Built in: the paper's template (the default, what the released checkpoints were trained on) and, opt-in by the name
`abstain`, the same template that also offers the "not in this image" answer `{'found': false}`
(`answer_parser.py`), for a reasoner retrained with negatives.

Plain text substitution, not str.format, so a template may hold JSON braces as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from monailabel_app.core.errors import RequestError

TEMPLATE_DIR = Path(__file__).parent / "templates"
BUILTIN_TEMPLATES = {True: TEMPLATE_DIR / "grounding_think.txt", False: TEMPLATE_DIR / "grounding_nothink.txt"}
NAMED_TEMPLATES = {
    "abstain": {
        True: TEMPLATE_DIR / "grounding_think_abstain.txt",
        False: TEMPLATE_DIR / "grounding_nothink_abstain.txt",
    }
}
MAX_QUESTION_CHARS = 2000


class InvalidQuestionError(RequestError):
    """The question can't be sent to the reasoner (empty, too long); the message says why."""


def validate_question(question: object) -> str:
    if question is not None and not isinstance(question, str):
        raise InvalidQuestionError(f"The question must be text, not {type(question).__name__}.")
    if not question or not question.strip():
        raise InvalidQuestionError("The question is empty: type a clinical question in the 'question' option.")
    question = question.strip()
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidQuestionError(
            f"The question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}. Shorten it."
        )
    return question


def load_template(think: bool = True, template_path: Optional[str] = None) -> str:
    """A user template (a file, or a built-in's name) wins over the built-in one; it must contain `{question}` exactly
    once."""
    if template_path in NAMED_TEMPLATES:
        path = NAMED_TEMPLATES[template_path][bool(think)]
    else:
        path = Path(template_path) if template_path else BUILTIN_TEMPLATES[bool(think)]
    text = path.read_text(encoding="utf-8")
    if text.count("{question}") != 1:
        raise ValueError(f"Prompt template {path} must contain the placeholder {{question}} exactly once.")
    return text


def build_prompt(question: str, think: bool = True, template_path: Optional[str] = None) -> str:
    return load_template(think, template_path).replace("{question}", validate_question(question))
