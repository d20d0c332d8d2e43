"""A readable plain-text version of an HTML body, for the text/plain alternative.

>>> html_to_text('<p>Hello <b>Ana</b>,</p><ul><li>one</li><li><a href="https://x.io">two</a></li></ul>')
'Hello Ana,\\n\\n- one\\n- two (https://x.io)'

What it keeps: paragraphs (a blank line between blocks), line breaks, list items as ``- item``
(``1. item`` in ordered lists), links as ``text (url)``, image alt text, quoted blocks prefixed
with ``> ``, preformatted text as is. What it drops: every tag, the content of ``head``,
``script``, ``style`` and ``template``, and HTML comments. Entities are decoded.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["html_to_text"]

_SKIP = frozenset({"head", "script", "style", "template", "title", "noscript"})
# fmt: off
_PARAGRAPH = frozenset({
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "table", "pre", "blockquote", "hr",
    "figure", "address",
})
_LINE = frozenset({
    "div", "li", "tr", "dt", "dd", "section", "article", "header", "footer", "nav", "main",
    "aside", "form", "fieldset", "center", "caption", "thead", "tbody", "tfoot", "body", "html",
})
# fmt: on
_CELL = frozenset({"td", "th"})
_SPACES = re.compile(r"[ \t\n\r\f\v]+")


class _TextWriter(HTMLParser):
    """Collects text with pending line breaks, so blocks never stack blank lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.breaks = 0  # line breaks owed before the next text (0, 1 or 2)
        self.skip_depth = 0
        self.pre_depth = 0
        self.quote_depth = 0
        self.written_depth = 0  # quote depth of the last text written
        self.lists: list[int] = []  # per open list: next number, or 0 for bullets
        self.links: list[tuple[str, int]] = []  # (href, len(out) at the start of the link)
        self.cell_open = False

    # -- output ----------------------------------------------------------------------------
    def want_break(self, count: int) -> None:
        if self.out:
            self.breaks = max(self.breaks, count)

    def write(self, text: str) -> None:
        if not text:
            return
        if self.breaks:
            prefix = "> " * self.quote_depth
            between = ">" * min(self.quote_depth, self.written_depth)  # the blank line's prefix
            blank = "\n" + (" ".join(between) + "\n" if self.breaks > 1 else "")
            self.out.append(blank + prefix)
            self.breaks = 0
        elif not self.out and self.quote_depth:
            self.out.append("> " * self.quote_depth)
        self.out.append(text)
        self.written_depth = self.quote_depth

    def ends_with_space(self) -> bool:
        return not self.out or self.breaks > 0 or self.out[-1].endswith((" ", "\n"))

    # -- parser callbacks -----------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip_depth += 1
            return
        if self.skip_depth:
            return
        attributes = dict(attrs)
        if tag == "br":
            self.breaks += 1 if self.out else 0
            self.breaks = min(self.breaks, 2)
        elif tag in _PARAGRAPH or tag in _LINE:
            self.start_block(tag)
        elif tag in _CELL:
            if self.cell_open and not self.ends_with_space():
                self.write(" ")
            self.cell_open = True
        elif tag == "a":
            self.links.append((attributes.get("href") or "", len(self.out)))
        elif tag == "img" and attributes.get("alt"):
            self.handle_data(attributes["alt"] or "")

    def start_block(self, tag: str) -> None:
        self.want_break(self.gap(tag))
        if tag == "blockquote":
            self.quote_depth += 1
        elif tag == "pre":
            self.pre_depth += 1
        elif tag in ("ul", "ol"):
            self.lists.append(1 if tag == "ol" else 0)
        elif tag == "li":
            self.breaks = max(self.breaks, 1) if self.out else 0
            self.write_marker()
        elif tag == "hr":
            self.write("-" * 20)
            self.want_break(2)
        elif tag == "tr":
            self.cell_open = False

    def gap(self, tag: str) -> int:
        """Line breaks around a block: a blank line for paragraphs, except for nested lists."""
        if tag in ("ul", "ol") and self.lists:
            return 1
        return 2 if tag in _PARAGRAPH else 1

    def write_marker(self) -> None:
        depth = max(len(self.lists) - 1, 0)
        if self.lists and self.lists[-1]:
            marker = f"{self.lists[-1]}. "
            self.lists[-1] += 1
        else:
            marker = "- "
        self.write("  " * depth + marker)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in ("br", "img", "hr"):
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip_depth = max(self.skip_depth - 1, 0)
            return
        if self.skip_depth:
            return
        if tag == "a" and self.links:
            self.end_link(*self.links.pop())
        elif tag in _PARAGRAPH or tag in _LINE:
            if tag in ("ul", "ol") and self.lists:
                self.lists.pop()
            self.want_break(self.gap(tag))
            if tag == "blockquote":
                self.quote_depth = max(self.quote_depth - 1, 0)
            elif tag == "pre":
                self.pre_depth = max(self.pre_depth - 1, 0)

    def end_link(self, href: str, start: int) -> None:
        label = "".join(self.out[start:]).strip()
        href = href.strip()
        if not href or href.startswith(("#", "javascript:")):
            return
        if label in (href, href.removeprefix("mailto:")):
            return
        if not label:
            self.write(href)
            return
        self.write(("" if self.ends_with_space() else " ") + f"({href})")

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.pre_depth:
            lines = data.replace("\r\n", "\n").split("\n")
            for index, line in enumerate(lines):
                if index:
                    self.breaks = 1
                self.write(line)
            return
        text = _SPACES.sub(" ", data)
        if self.ends_with_space():
            text = text.lstrip(" ")
        self.write(text)


def html_to_text(html: str) -> str:
    """Convert an HTML body into readable plain text (see the module docstring)."""
    writer = _TextWriter()
    writer.feed(html)
    writer.close()
    lines = [line.rstrip() for line in "".join(writer.out).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")
