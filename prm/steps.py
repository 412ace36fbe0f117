"""Split a solution into steps and join steps back.

Modes of `split_steps`:

- ``paragraphs``: blocks separated by one or more blank lines.
- ``lines``: one step per non-empty line.
- ``headers``: a step starts at each ``Step k:`` / ``## Step k:`` / ``**Step k:**`` header at the
  start of a line; text before the first header (if any) is its own step. Headers stay in the step.
- ``tag``: steps end with a tag token (``ки`` for Math-Shepherd, ``<extra_0>`` for Qwen PRMs);
  the tags are removed.
- ``auto``: ``tag`` if a known tag occurs, else ``headers`` if two or more headers occur, else
  ``paragraphs`` if there are two or more paragraphs, else ``lines``.

Steps are returned stripped of surrounding whitespace; empty steps never appear. For steps that are
stripped and hold no separator of their own, ``split_steps(join_steps(s, sep), mode) == s``
(``sep="\\n\\n"`` with ``paragraphs``, ``"\\n"`` with ``lines``).
"""

from __future__ import annotations

import re

STEP_TAGS = ("ки", "<extra_0>")
SPLIT_MODES = ("auto", "paragraphs", "lines", "headers", "tag")

_PARAGRAPH = re.compile(r"\n[ \t]*\n")
# "Step 3:", "## Step 3:", "### Step 3.", "**Step 3:**", "Step 3 -" at the start of a line.
_HEADER = re.compile(r"(?m)^[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*)?Step[ \t]+\d+[ \t]*(?:\*\*)?[ \t]*[:.)\-]")


def _clean(parts: list[str]) -> list[str]:
    return [p.strip() for p in parts if p.strip()]


def split_steps(text: str, mode: str = "auto", tag: str | None = None) -> list[str]:
    """Split ``text`` into steps (see the module docstring for the modes)."""
    if mode not in SPLIT_MODES:
        raise ValueError(f"unknown split mode '{mode}'; known: {', '.join(SPLIT_MODES)}")
    if mode == "auto":
        mode = detect_mode(text)
        if mode == "tag":
            tag = tag or next(t for t in STEP_TAGS if t in text)
    if mode == "tag":
        tag = tag or next((t for t in STEP_TAGS if t in text), STEP_TAGS[0])
        return _clean(text.split(tag))
    if mode == "paragraphs":
        return _clean(_PARAGRAPH.split(text))
    if mode == "lines":
        return _clean(text.split("\n"))
    starts = [m.start() for m in _HEADER.finditer(text)]
    bounds = ([0] if not starts or starts[0] != 0 else []) + starts + [len(text)]
    return _clean([text[a:b] for a, b in zip(bounds, bounds[1:])])


def detect_mode(text: str) -> str:
    """The mode ``auto`` would use for ``text``."""
    if any(t in text for t in STEP_TAGS):
        return "tag"
    if len(_HEADER.findall(text)) >= 2:
        return "headers"
    if len(_clean(_PARAGRAPH.split(text))) >= 2:
        return "paragraphs"
    return "lines"


def answer_step(answer: str) -> str:
    """The closing step that states the final answer, in the form the local generator's prompt asks
    for ("The answer is: N"). Reference solutions that get this step look like model solutions at
    the end; without it a PRM learns that any "The answer is" step is a model's (mostly wrong) one."""
    return f"The answer is: {answer}"


def join_steps(steps: list[str], sep: str = "\n\n") -> str:
    """Join steps with ``sep`` (use a tag such as ``" ки\\n"`` to write tagged text)."""
    return sep.join(steps)


def step_spans(text: str, mode: str = "paragraphs") -> list[tuple[int, int, str]]:
    """Like `split_steps` for ``paragraphs`` or ``lines``, with each step's (start, end) offsets in
    ``text`` so that character annotations (e.g. CHAMP's wrong-step spans) can be mapped to steps."""
    pattern = {"paragraphs": _PARAGRAPH, "lines": re.compile(r"\n")}.get(mode)
    if pattern is None:
        raise ValueError("step_spans supports the modes 'paragraphs' and 'lines'")
    spans, pos = [], 0
    for m in list(pattern.finditer(text)) + [None]:
        end = m.start() if m else len(text)
        chunk = text[pos:end]
        if chunk.strip():
            lead = len(chunk) - len(chunk.lstrip())
            spans.append((pos + lead, pos + len(chunk.rstrip()), chunk.strip()))
        pos = m.end() if m else len(text)
    return spans
