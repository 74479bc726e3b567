"""The last step of cleaning: an lxml tree -> structured text (`#` headings, paragraphs,
`- ` list items, fenced code blocks kept verbatim, tables as `a | b` rows), in one iterative
pass, whitespace normalised (`indexing.cleaning` picks what is rendered)."""

from __future__ import annotations

import re

from lxml import etree

HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
BLOCK_TAGS = frozenset(
    """p div section article main header footer blockquote ul ol li dl dt dd table thead tbody
    tfoot tr figure figcaption h1 h2 h3 h4 h5 h6 pre hr br address details summary caption
    center""".split()
)
SPACES = re.compile(r"[ \t\r\f\v\u00a0\u2000-\u200b\u3000]+")
HTML_SPACE = re.compile(r"[ \t\r\n\f\v]+")
BLANK_LINES = re.compile(r"\n{3,}")
CODE_MARK = "\ue000"  # private-use character around fenced code during rendering


class Renderer:
    """Walks the tree once, iteratively, writing structured text.

    Line breaks are requested, not written: the largest pending request is written before
    the next text, so nested blocks never stack blank lines.
    """

    def __init__(self) -> None:
        self.out: list[str] = []
        self.pending = 0  # newlines owed before the next text
        self.list_depth = 0
        self.after_marker = False  # a "- " or "## " waits for its text on the same line

    def want_break(self, lines: int = 2) -> None:
        if self.after_marker:
            return
        if self.list_depth:  # inside a list, blocks (<li><p>) do not leave blank lines
            lines = 1
        self.pending = max(self.pending, lines)

    def emit(self, value: str) -> None:
        if self.pending and self.out:
            self.out.append("\n" * self.pending)
        self.pending = 0
        self.after_marker = False
        self.out.append(value)

    def marker(self, value: str) -> None:
        self.emit(value)
        self.after_marker = True

    def text(self, value: str | None) -> None:
        if not value:
            return
        # Source line breaks are spaces in HTML; only blocks and <br> break lines.
        collapsed = HTML_SPACE.sub(" ", value)
        if collapsed.strip():
            self.emit(collapsed)
        elif not self.pending and not self.after_marker and self.out:
            self.out.append(" ")

    def render(self, root: etree._Element) -> str:
        # Each stack entry: (element, closing?)
        stack: list[tuple[etree._Element, bool]] = [(root, False)]
        while stack:
            el, closing = stack.pop()
            tag = el.tag if isinstance(el.tag, str) else ""
            if closing:
                self.close(tag)
                self.text(el.tail)
                continue
            if tag == "pre":
                self.code_block(el)
            elif tag == "table":
                self.table(el)
            else:
                self.open(el, tag)
                self.text(el.text)
                stack.append((el, True))
                stack.extend((child, False) for child in reversed(el))
                continue
            self.text(el.tail)
        return normalise_whitespace("".join(self.out))

    def open(self, el: etree._Element, tag: str) -> None:
        if tag in HEADINGS:
            self.want_break(2)
            self.marker("#" * HEADINGS[tag] + " ")
        elif tag in ("ul", "ol"):
            self.want_break(2)
            self.list_depth += 1
        elif tag == "li":
            self.want_break(1)
            parent = el.getparent()
            bullet = "1." if parent is not None and parent.tag == "ol" else "-"
            self.marker("  " * max(self.list_depth - 1, 0) + bullet + " ")
        elif tag == "br":
            self.out.append("\n")
        elif tag == "dt":
            self.want_break(1)
        elif tag == "dd":
            self.want_break(1)
            self.marker("  ")
        elif tag == "blockquote":
            self.want_break(2)
            self.marker("> ")
        elif tag in BLOCK_TAGS:
            self.want_break(2)
        elif tag in ("td", "th"):
            self.text(" ")

    def close(self, tag: str) -> None:
        if tag in ("ul", "ol"):
            self.list_depth -= 1
            self.want_break(2)
        elif tag in ("li", "dt", "dd"):
            self.want_break(1)
        elif tag in BLOCK_TAGS and tag != "br":
            self.want_break(2)
        elif tag in ("td", "th"):
            self.text(" ")

    def code_block(self, el: etree._Element) -> None:
        code = "".join(el.itertext()).strip("\n")
        if code.strip():
            self.want_break(2)
            # A private marker keeps the whitespace normaliser off the code's own spacing.
            self.emit(f"{CODE_MARK}```\n{code}\n```{CODE_MARK}")
            self.want_break(2)

    def table(self, el: etree._Element) -> None:
        rows = []
        caption = el.find("caption")
        if caption is not None and inline_text(caption):
            rows.append(inline_text(caption))
        for tr in el.iter("tr"):
            cells = [inline_text(cell) for cell in tr if cell.tag in ("td", "th")]
            cells = [c for c in cells if c]
            if cells:
                rows.append(" | ".join(cells))
        if rows:
            self.want_break(2)
            self.emit("\n".join(rows))
            self.want_break(2)


def inline_text(el: etree._Element) -> str:
    code_blocks = [pre for pre in el.iter("pre")]
    if code_blocks:  # a table cell with a code block keeps the code's line breaks
        return " ".join(Renderer().render(el).split("\n\n")).strip()
    return SPACES.sub(" ", " ".join(t.strip() for t in el.itertext() if t.strip())).strip()


def normalise_whitespace(text: str) -> str:
    parts = text.split(CODE_MARK)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 1:  # a fenced code block: verbatim
            out.append(part)
            continue
        lines = [SPACES.sub(" ", line).strip() for line in part.split("\n")]
        out.append("\n".join(lines))
    return BLANK_LINES.sub("\n\n", "".join(out)).strip()
