"""Addresses mean what they say: ambiguous input is refused by name, and the constructor, the
standard library and ``from_bytes()`` never read different mailboxes out of one text."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.errors import AddressError, PostroomError
from postroom.message import Email
from tests.hypothesis_profiles import PROFILE

AMBIGUOUS = [
    "alice@example.com<bob@evil.com>",
    "alice@example.com <bob@evil.com>",
    "Alice <bob@evil.com> <carol@evil.com>",
    '"Al"ice" <a@example.com>',
    'Al"ice <a@example.com>',
    "Team: <a@example.com>",
    "x;y <a@example.com>",
    "[Alice] <a@example.com>",
    "Alice\\ <a@example.com>",
    "a (b <c@example.com>",
]
PLAIN = [
    "alice@example.com",
    "Alice <alice@example.com>",
    '"alice@example.com" <bob@example.net>',
    '"Doe, John" <john@example.com>',
    "J. R. Doe <jrd@example.com>",
    '"say \\"hi\\"" <h@example.com>',
]


def header_mailboxes(header: str) -> list[str]:
    """What the standard library reads as the mailboxes of ``To: header``."""
    raw = f"From: a@example.com\r\nTo: {header}\r\n\r\n".encode()
    message = BytesParser(policy=policy.default).parsebytes(raw)
    # ("Doe, John <j@x>" also gives the mailbox "Doe", with no domain and a defect: not one)
    return [a.addr_spec for a in message["To"].addresses if "@" in a.addr_spec]


@pytest.mark.parametrize("text", AMBIGUOUS)
@pytest.mark.parametrize(
    "field", ["to", "cc", "bcc", "reply_to", "read_receipt", "from_", "sender"]
)
def test_ambiguous_addresses_are_refused_naming_the_field(field: str, text: str) -> None:
    with pytest.raises(AddressError) as caught:
        Email(**{field: text})  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"{field}: {text!r}")
    assert "ambiguous" in message


@pytest.mark.parametrize("text", PLAIN)
def test_the_constructor_the_stdlib_and_from_bytes_agree(text: str) -> None:
    e = Email(from_="a@example.com", to=text, text="x")
    envelope = e.envelope_recipients
    assert header_mailboxes(text) == envelope  # the text as a header means the same mailbox
    rendered = e.to_bytes()
    parsed = BytesParser(policy=policy.default).parsebytes(rendered)
    assert [a.addr_spec for a in parsed["To"].addresses] == envelope
    assert Email.from_bytes(rendered).envelope_recipients == envelope


@pytest.mark.parametrize("text", AMBIGUOUS[:3])
def test_from_bytes_of_an_ambiguous_header_keeps_what_the_stdlib_reads(text: str) -> None:
    raw = f"From: a@example.com\r\nTo: {text}\r\n\r\nbody\r\n".encode()
    copy = Email.from_bytes(raw)
    assert copy.envelope_recipients == header_mailboxes(text)
    again = Email.from_bytes(copy.to_bytes())  # re-rendered: the header says what it sends
    assert again.envelope_recipients == copy.envelope_recipients


@pytest.mark.parametrize(
    ("address", "envelope"),
    [
        ("info@faß.de", "info@xn--fa-hia.de"),  # IDNA 2008 keeps ß; IDNA 2003 gave fass.de
        ("info@ＦＡＳＳ.de", "info@fass.de"),  # UTS #46 maps fullwidth letters
        ("a@bücher.example", "a@xn--bcher-kva.example"),
        ("a@例え。jp", "a@xn--r8jz45g.jp"),  # the ideographic full stop separates labels
        ("a@under_score.bücher.example", "a@under_score.xn--bcher-kva.example"),
    ],
)
def test_domains_use_idna_2008_with_uts46(address: str, envelope: str) -> None:
    assert Email(from_="a@example.com", to=address).envelope_recipients == [envelope]


@pytest.mark.parametrize(
    "hidden",
    ["\u200b", "\u200c", "\u200d", "\u00ad", "\ufeff", "\u2060", "\u180e", "\ufe0f", "\U000e0041"],
)
def test_invisible_characters_in_a_domain_are_refused(hidden: str) -> None:
    with pytest.raises(AddressError) as caught:
        Email(to=f"a@exa{hidden}mple.com")
    assert str(caught.value).startswith("to: ")
    assert f"U+{ord(hidden):04X}" in str(caught.value)


def test_an_invalid_idna_2008_domain_is_refused_by_name() -> None:
    with pytest.raises(AddressError, match=r"^cc: .*IDNA 2008"):
        Email(cc="a@\u2603.example")  # a snowman: valid in IDNA 2003 only


def joined(tokens: list[str], size: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(tokens), max_size=size).map("".join)


NAME_TOKENS = [*'ab @<>()",;:[]\\.=?', "x@example.com", "é", "=?utf-8?q?x?="]
address_text = joined(NAME_TOKENS, 10).map(lambda name: f"{name} <c@example.com>") | joined(
    [*'ab @<>()",;:.', "x@example.com", "y@example.org"], 12
)


@PROFILE
@given(address_text)
def test_whatever_the_constructor_accepts_from_bytes_reads_alike(text: str) -> None:
    try:
        envelope = Email(to=text).envelope_recipients
    except PostroomError as error:
        assert str(error).startswith("to: ")
        return
    raw = f"From: a@example.com\r\nTo: {text}\r\n\r\nx\r\n".encode()
    assert Email.from_bytes(raw).envelope_recipients == envelope
    try:
        stdlib = header_mailboxes(text)
    except AttributeError:  # the standard library's parser fails on a few names, e.g. "."
        return
    assert stdlib == envelope
