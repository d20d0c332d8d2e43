"""The plain-text alternative generated from HTML."""

from __future__ import annotations

import pytest

from postroom.message.html_text import html_to_text


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>one</p><p>two</p>", "one\n\ntwo"),
        ("line one<br>line two<br/>line three", "line one\nline two\nline three"),
        ("<p>a<br><br>b</p>", "a\n\nb"),
        ("<div>a</div><div>b</div>", "a\nb"),
        ("<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
        ("<ol><li>first</li><li>second</li></ol>", "1. first\n2. second"),
        ("<ul><li>a<ul><li>nested</li></ul></li></ul>", "- a\n  - nested"),
        (
            "<ul><li>a</li><li>b<ol><li>x</li><li>y</li></ol></li><li>c</li></ul>",
            "- a\n- b\n  1. x\n  2. y\n- c",
        ),
        ('<a href="https://x.example/p">the page</a>', "the page (https://x.example/p)"),
        ('<a href="https://x.example">https://x.example</a>', "https://x.example"),
        ('<a href="mailto:a@example.com">a@example.com</a>', "a@example.com"),
        ('<a href="#top">top</a>', "top"),
        ('<a href="https://x.example"></a>', "https://x.example"),
        (
            '<a href="https://x.example"><img src="cid:x" alt="Logo"></a>',
            "Logo (https://x.example)",
        ),
        ("<p>spaces   and\n\ttabs   collapse</p>", "spaces and tabs collapse"),
        ("<pre>  keep\n    this</pre>", "  keep\n    this"),
        ("Fish &amp; chips &lt;3 &eacute;t&#233; &#x1F600;", "Fish & chips <3 été 😀"),
        ("<blockquote><p>quoted</p><p>more</p></blockquote>", "> quoted\n>\n> more"),
        ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>", "a b\nc d"),
        ("<h1>Title</h1>body", "Title\n\nbody"),
        ("before<hr>after", "before\n\n--------------------\n\nafter"),
        ("", ""),
    ],
)
def test_conversion(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_script_style_head_and_comments_are_dropped() -> None:
    html = """<html><head><title>Title</title><style>p { color: red }</style></head>
    <body><script>var x = "<p>not text</p>";</script><!-- a comment -->
    <p>visible</p><noscript>no</noscript><template><p>hidden</p></template></body></html>"""
    assert html_to_text(html) == "visible"


def test_no_tags_survive_a_realistic_newsletter() -> None:
    html = """<!DOCTYPE html><html><body style="margin:0">
    <table role="presentation" width="100%"><tr><td align="center">
      <h1 style="font-size:24px">Your weekly digest</h1>
      <p>Hi Ana,<br>here is what happened this week:</p>
      <ul><li><a href="https://news.example/1?utm=x&amp;a=1">Release 2.0</a> is out</li>
          <li>Meetup on <b>Friday</b></li></ul>
      <p style="color:#999">Unsubscribe: <a href="https://news.example/u">click here</a></p>
    </td></tr></table></body></html>"""
    text = html_to_text(html)
    assert "<" not in text and ">" not in text
    assert text.splitlines() == [
        "Your weekly digest",
        "",
        "Hi Ana,",
        "here is what happened this week:",
        "",
        "- Release 2.0 (https://news.example/1?utm=x&a=1) is out",
        "- Meetup on Friday",
        "",
        "Unsubscribe: click here (https://news.example/u)",
    ]


def test_broken_html_does_not_raise() -> None:
    assert html_to_text("<p>unclosed <b>bold <i>italic") == "unclosed bold italic"
    assert html_to_text("</p></div>stray closers") == "stray closers"
    assert html_to_text("a < b and c > d") == "a < b and c > d"
