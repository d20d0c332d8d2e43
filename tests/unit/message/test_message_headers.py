"""Low-level header pieces: addresses, encoded-words, folding, RFC 2231 parameters."""

from __future__ import annotations

import re
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser

import pytest

from postroom.errors import AddressError, HeaderError
from postroom.message.addresses import Address, address_header, parse_address
from postroom.message.headers import encoded_words, fold, unstructured, with_params


def decoded(words: list[str]) -> str:
    return str(make_header(decode_header("".join(words))))


# -- addresses -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "name", "spec"),
    [
        ("a@example.com", "", "a@example.com"),
        ("Ana <a@example.com>", "Ana", "a@example.com"),
        ('"Doe, John" <j@example.com>', "Doe, John", "j@example.com"),
        ("Doe, John <j@example.com>", "Doe, John", "j@example.com"),
        ('"say \\"hi\\"" <h@example.com>', 'say "hi"', "h@example.com"),
        ("<a@example.com>", "", "a@example.com"),
        ('"a<b" <x@example.com>', "a<b", "x@example.com"),
        ("J. R. Doe <j@example.com>", "J. R. Doe", "j@example.com"),
    ],
)
def test_parse_address(text: str, name: str, spec: str) -> None:
    address = parse_address(text)
    assert (address.name, address.addr_spec) == (name, spec)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Ana", "Ana <a@example.com>"),
        ("Doe, John", '"Doe, John" <a@example.com>'),
        ('say "hi"', '"say \\"hi\\"" <a@example.com>'),
        (" padded ", '" padded " <a@example.com>'),
        ("", "a@example.com"),
    ],
)
def test_str_of_an_address_parses_back(name: str, shown: str) -> None:
    address = Address(name, "a", "example.com", "example.com")
    assert str(address) == shown
    assert parse_address(shown).name == name


def test_address_errors_name_the_field_and_the_input() -> None:
    with pytest.raises(AddressError, match=r"^reply_to: 'nope' is not a valid email address"):
        parse_address("nope", "reply_to")
    with pytest.raises(HeaderError, match=r"^to: .* line break"):
        parse_address("A\r\n <a@example.com>", "to")


def test_idna_conversion_errors_are_address_errors() -> None:
    with pytest.raises(AddressError, match=r"IDNA|bad domain"):
        parse_address("a@ex\u00e4mple..com")


def test_address_header_quotes_and_encodes_names() -> None:
    addresses = [
        parse_address('"Doe, John" <j@example.com>'),
        parse_address("Zoë <z@example.com>"),
        parse_address("plain@example.com"),
    ]
    line = address_header("To", addresses)
    assert line == (
        'To: "Doe, John" <j@example.com>, =?utf-8?q?Zo=C3=AB?= <z@example.com>,\r\n'
        " plain@example.com\r\n"
    )


# -- encoded words and folding -------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "Grüße",
        "日本語のテキスト" * 10,
        "mostly ascii with one é " * 8,
        " lead and trail ",
        "a_b=c?d",
    ],
)
def test_encoded_words_decode_back_and_respect_the_length_limit(text: str) -> None:
    words = encoded_words(text)
    assert all(len(word.strip()) <= 75 for word in words)
    assert all(re.fullmatch(r" ?=\?utf-8\?[qb]\?[!->@-~]*\?=", word) for word in words)
    assert decoded(words) == text


def test_encoded_words_pick_the_shorter_encoding() -> None:
    assert encoded_words("café")[0].startswith("=?utf-8?q?")
    assert encoded_words("日本語")[0].startswith("=?utf-8?b?")


def test_fold_breaks_before_pieces_at_78_characters() -> None:
    pieces = ["word"] + [" word"] * 40
    lines = fold("Subject", pieces).split("\r\n")
    assert lines[-1] == ""
    assert all(len(line) <= 78 for line in lines)
    assert "".join(lines) == "Subject: " + "word" + " word" * 40


def test_unstructured_keeps_plain_ascii_readable() -> None:
    assert unstructured("Subject", "Hello world") == "Subject: Hello world\r\n"
    assert unstructured("Subject", "") == "Subject: \r\n"
    assert "=?utf-8?" in unstructured("Subject", "=?utf-8?q?not_a_word?=")
    assert "=?utf-8?" in unstructured("Subject", "Grüße")
    assert unstructured("Subject", "Grüße", smtputf8=True) == "Subject: Grüße\r\n"


def test_with_params_quotes_short_ascii_and_uses_rfc2231_otherwise() -> None:
    assert with_params("Content-Disposition", "attachment", [("filename", "a b.pdf")]) == (
        'Content-Disposition: attachment; filename="a b.pdf"\r\n'
    )
    line = with_params("Content-Disposition", "attachment", [("filename", "März.pdf")])
    assert line == "Content-Disposition: attachment; filename*=utf-8''M%C3%A4rz.pdf\r\n"


def test_long_rfc2231_values_are_split_without_breaking_escapes() -> None:
    name = "ü" * 40 + ".pdf"
    line = with_params("Content-Disposition", "attachment", [("filename", name)])
    physical = line.split("\r\n")
    assert all(len(part) <= 78 for part in physical)
    segments = re.findall(r"filename\*(\d+)\*=([^;\r\n]*)", line)
    assert [int(index) for index, _ in segments] == list(range(len(segments)))
    assert all(not re.search(r"%.?$", value) for _, value in segments[:-1])
    message = BytesParser(policy=policy.default).parsebytes(line.encode("ascii") + b"\r\n")
    assert message.get_filename() == name


def test_long_parameter_names_still_split_their_values() -> None:
    key = "x" * 127
    line = with_params("Content-Type", "text/plain", [(key, "é" * 100)])
    assert all(len(part) <= 998 for part in line.split("\r\n"))
    message = BytesParser(policy=policy.default).parsebytes(line.encode("ascii") + b"\r\n")
    assert message.get_param(key) == "é" * 100


@pytest.mark.parametrize(
    "value",
    ["", "Hi", "Your order  ships today", "x" * 69, "x" * 70, "a " * 40, "tab\there", "=?no?="],
)
def test_a_short_plain_value_is_written_as_folding_would_write_it(value: str) -> None:
    from postroom.message.headers import _plain_ok, _plain_pieces

    written = unstructured("Subject", value)
    if _plain_ok(value, False):
        assert written == fold("Subject", _plain_pieces(value))
    else:
        assert "=?" in written  # encoded, never written as is


def test_a_bad_domain_names_the_whole_address_every_time() -> None:
    for text in ("Ana <a@-bad.example>", "Bo <b@-bad.example>"):  # the same domain twice
        with pytest.raises(AddressError, match=re.escape(f"{text!r}") + ".*bad domain"):
            parse_address(text)
    assert parse_address("b@example.org").ascii_domain == "example.org"
