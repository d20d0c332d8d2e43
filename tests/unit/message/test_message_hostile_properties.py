"""Property tests over hostile Email fields.

Every input either raises a ``postroom`` error that names the field it came through, or renders
bytes that are CRLF-only, 7-bit (8-bit only with SMTPUTF8), at most 998 octets a line, free of
Bcc, and that read back (with postroom and with the standard library's ``email`` package,
default policy) to the same addresses, subject and parts.
"""

from __future__ import annotations

from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from postroom.errors import PostroomError
from postroom.message import Email
from tests.hypothesis_profiles import PROFILE
from tests.readback import check_postroom, check_stdlib, wire_rules

# -- strategies: plausible input mixed with what an attacker or a careless caller writes -------

HOSTILE_CHARS = '\r\n\x00\x07\x1b\x7f\x85\u2028\u200b\u202e\ufeff<>@",;:()[]\\=?_ '
hostile_text = st.text(
    st.characters(exclude_categories=["Cs"]) | st.sampled_from(HOSTILE_CHARS), max_size=40
)
good_local = st.sampled_from(["a", "bob", "x.y", "o'neil", "a+tag", "1"])
good_domain = st.sampled_from(["example.com", "exämple.com", "faß.de", "例え。jp", "[192.0.2.1]"])
bad_local = st.sampled_from(["ü", '"q u"', "-", "a..b", "x" * 65])
bad_domain = st.sampled_from(
    ["exa\u200bmple.com", "bad..com", "-x.com", "a_b.example", "☃.example"]
)
good_spec = st.builds(lambda lo, do: f"{lo}@{do}", good_local, good_domain)
spec = st.builds(lambda lo, do: f"{lo}@{do}", good_local | bad_local, good_domain | bad_domain)
name_text = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=30)


@st.composite
def good_address(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(good_spec)
    escaped = draw(name_text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{draw(good_spec)}>'


@st.composite
def hostile_address(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return f"{draw(hostile_text)} <{draw(spec)}>"
    if kind == 1:
        return f"{draw(spec)}<{draw(spec)}>"  # the CVE-2023-27043 shape
    if kind == 2:
        return f"{draw(spec)}, {draw(spec)}"
    return draw(hostile_text)


one_line = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"))
HEADER_NAMES = ["X-Tag", "List-Id", "Resent-Bcc", "X-Postroom-Rcpt-To", "Bcc", "Content-Type"]
GOOD_TYPES = [
    "application/octet-stream",
    "text/plain; charset=utf-8",
    "message/rfc822",
    "image/png",
]


@st.composite
def forwarded(draw: st.DrawFn) -> bytes:
    """A 7-bit message, sometimes holding lines that look like MIME boundaries."""
    lines = draw(st.lists(st.sampled_from(["hello", "--=_", "--=_0.0--", "", "=_a.1"]), max_size=5))
    return ("From: x@example.com\r\nSubject: fwd\r\n\r\n" + "\r\n".join(lines)).encode()


def attachments(filename: st.SearchStrategy[str], types: st.SearchStrategy[str]) -> Any:
    item = st.tuples(filename, st.binary(max_size=200) | forwarded(), types, st.booleans())
    return st.lists(item, max_size=3)


good_filename = one_line.filter(lambda name: name.strip() != "")
# field -> (a value that should pass, a value that may well not)
VALUES: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "from_": (good_address(), hostile_address()),
    "sender": (st.none() | good_spec, hostile_address()),
    "to": (
        st.lists(good_address(), min_size=1, max_size=2),
        st.lists(hostile_address(), max_size=2),
    ),
    "cc": (st.lists(good_address(), max_size=2), st.lists(hostile_address(), max_size=2)),
    "bcc": (st.lists(good_address(), max_size=2), st.lists(hostile_address(), max_size=2)),
    "reply_to": (st.lists(good_address(), max_size=1), st.lists(hostile_address(), max_size=2)),
    "read_receipt": (st.lists(good_spec, max_size=1), st.lists(hostile_address(), max_size=1)),
    "subject": (one_line, hostile_text),
    "text": (st.none() | st.text(max_size=300), hostile_text),
    "html": (st.none() | st.text(max_size=300), hostile_text),
    "headers": (
        st.dictionaries(st.sampled_from(["X-Tag", "List-Id"]), one_line),
        st.dictionaries(st.sampled_from(HEADER_NAMES) | st.text(max_size=5), hostile_text),
    ),
    "message_id": (
        st.none() | st.just("<order-1234@shop.example>"),
        hostile_text,
    ),
    "attachments": (
        attachments(good_filename, st.sampled_from(GOOD_TYPES)),
        attachments(hostile_text, st.sampled_from([*GOOD_TYPES, "x", "text/plain; a"])),
    ),
}


# field -> the words an error about it must contain (one is enough)
FIELD_WORDS = {
    "from_": ("from_",),
    "sender": ("sender",),
    "to": ("to",),
    "cc": ("cc",),
    "bcc": ("bcc",),
    "reply_to": ("reply_to",),
    "read_receipt": ("read_receipt",),
    "subject": ("subject",),
    "text": ("text",),
    "html": ("html",),
    "headers": ("header",),
    "message_id": ("message_id",),
    "attach": ("attachment", "content type", "content_id"),
    "to_bytes": ("from_", "to, cc or bcc"),
}
FIELD_ORDER = ["from_", "sender", "to", "cc", "bcc", "reply_to", "read_receipt"]


@st.composite
def fields(draw: st.DrawFn) -> dict[str, Any]:
    """Every field good but (usually) one, which gets hostile input."""
    hostile = draw(st.sampled_from([None, None, *VALUES]))
    data = {name: draw(values[name == hostile]) for name, values in VALUES.items()}
    return {"smtputf8": draw(st.booleans()), "auto_text": draw(st.booleans()), **data}


# -- building: every refusal must name its field ---------------------------------------------


def refused_naming(step: str, error: Exception) -> None:
    event(f"refused at {step}")
    assert isinstance(error, PostroomError), f"{step}: {error!r} is not a postroom error"
    message = str(error)
    words = FIELD_WORDS[step]
    assert any(word in message for word in words), f"{step}: {message!r} names none of {words}"


def build(data: dict[str, Any]) -> Email | None:
    """The Email, or None after checking that the refusal names the field."""
    e = Email(smtputf8=data["smtputf8"], auto_text=data["auto_text"])
    steps: list[tuple[str, Any]] = [(name, data[name]) for name in FIELD_ORDER]
    steps += [(name, data[name]) for name in ("subject", "text", "html", "headers", "message_id")]
    for name, value in steps:
        try:
            setattr(e, name, value)
        except Exception as error:
            refused_naming(name, error)
            return None
    for filename, content, content_type, inline in data["attachments"]:
        try:
            e.attach(content, filename, content_type, inline)
        except Exception as error:
            refused_naming("attach", error)
            return None
    return e


@PROFILE
@given(fields())
def test_hostile_fields_are_refused_by_name_or_render_safely(data: dict[str, Any]) -> None:
    e = build(data)
    if e is None:
        return
    try:
        raw = e.to_bytes()
    except Exception as error:
        refused_naming("to_bytes", error)
        return
    event("rendered")
    wire_rules(raw, e)
    check_stdlib(raw, e)
    check_postroom(raw, e)
    assert e.to_bytes() == raw  # the same bytes on every render
