"""Email addresses: parse what users write, render what SMTP and RFC 5322 need.

One string is one address: ``"alice@example.com"``, ``"Alice <alice@example.com>"`` or
``'"Doe, John" <j@example.com>'``. Everything before the last ``<`` is the display name, so an
unquoted ``Doe, John <j@example.com>`` is also one address. An unquoted display name may not
hold ``@ < > ( ) " \\ : ; [ ]``: ``alice@example.com<bob@evil.com>`` would be read as Alice's
address by mail programs and as Bob's by the envelope, so such input is refused (quote the name
to mean it). Internationalised domains are converted to punycode with IDNA 2008 and the UTS #46
mapping (``faß.de`` is ``xn--fa-hia.de``); invisible (default-ignorable) characters in a domain
are refused. A non-ASCII local part can only be sent with SMTPUTF8, which :meth:`Address.spec`
enforces.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

import idna

from postroom._quick_init import quick_init
from postroom.errors import AddressError, HeaderError
from postroom.message.headers import check_value, encoded_words, fold

__all__ = ["CONTROL", "Address", "address_header", "parse_address", "parse_addresses"]

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_DOT_ATOM = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*\Z")
_QUOTED_LOCAL = re.compile(r'"(?:[ !#-\[\]-~\u0080-\U0010ffff]|\\[ -~])*"\Z')
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_LITERAL = re.compile(r"\[[!-Z^-~]+\]\Z")
_ATOM_PHRASE = re.compile(rf"[{_ATEXT}]+(?: [{_ATEXT}]+)*\Z")
_QUOTABLE = re.compile(r"[ -~]{1,60}\Z")
_SPECIALS = frozenset('"(),:;<>@[\\]')
_NAME_SPECIALS = re.compile(r'[@<>()"\\:;\[\]]')  # refused in an unquoted display name
_QUOTED_NAME = re.compile(r'"(?:[^"\\]|\\.)*"\Z')
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # never meaningful in a name; parsers mangle them
# Unicode's Default_Ignorable_Code_Point: invisible, and dropped by IDNA mapping
_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


@quick_init
@dataclass(frozen=True, slots=True)
class Address:
    """One parsed address. ``domain`` is as written; ``ascii_domain`` is its punycode form."""

    name: str
    local: str
    domain: str
    ascii_domain: str

    @property
    def addr_spec(self) -> str:
        """``local@domain`` as written (Unicode domain kept)."""
        return f"{self.local}@{self.domain}"

    def spec(self, smtputf8: bool = False) -> str:
        """``local@ascii-domain`` for SMTP and headers; refuses a non-ASCII local part.

        Without ``smtputf8`` a non-ASCII local part cannot be delivered, so this raises
        :class:`AddressError` naming the address.
        """
        if not smtputf8 and not self.local.isascii():
            raise AddressError(
                f"{self.addr_spec!r} has a non-ASCII local part, which needs SMTPUTF8: "
                "set smtputf8=True on the Email if your server supports it"
            )
        return f"{self.local}@{self.ascii_domain}"

    def __str__(self) -> str:
        """The form users write: ``Name <local@domain>``, quoting the name when needed."""
        if not self.name:
            return self.addr_spec
        name = self.name
        if name != name.strip() or any(char in _SPECIALS for char in name):
            escaped = name.replace("\\", "\\\\").replace('"', '\\"')
            name = f'"{escaped}"'
        return f"{name} <{self.addr_spec}>"

    def header_pieces(self, smtputf8: bool = False) -> list[str]:
        """Folding pieces for a header: the name (atoms, quoted or encoded-words), ``<spec>``."""
        spec = self.spec(smtputf8)
        name = self.name
        if not name:
            return [spec]
        if "=?" in name:  # would be decoded as an encoded-word by readers: encode it
            pieces = encoded_words(name, 10)
        elif _ATOM_PHRASE.match(name) and max(map(len, name.split(" "))) <= 70:
            words = name.split(" ")
            pieces = [words[0]] + [" " + word for word in words[1:]]
        elif _QUOTABLE.match(name) or (smtputf8 and name.isprintable() and len(name) <= 60):
            escaped = name.replace("\\", "\\\\").replace('"', '\\"')
            pieces = [f'"{escaped}"']
        else:
            pieces = encoded_words(name, 10)
        return [*pieces, f" <{spec}>"]


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == '"' and name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name


def _ascii_domain(domain: str, text: str) -> str:
    """The ASCII form of ``domain``; :class:`AddressError` quoting ``text`` when invalid."""
    known = _valid_ascii_domain(domain)
    return known if known is not None else _checked_ascii_domain(domain, text)


@functools.lru_cache(maxsize=1024)
def _valid_ascii_domain(domain: str) -> str | None:
    """The ASCII form of a valid ``domain``, else ``None``: a few domains (a company's own, the
    big mailbox providers) make up most addresses, and IDNA checks cost more than a lookup."""
    try:
        return _checked_ascii_domain(domain, domain)
    except AddressError:
        return None


def _checked_ascii_domain(domain: str, text: str) -> str:
    if _LITERAL.match(domain):
        return domain
    ascii_domain = domain if domain.isascii() else _idna(domain, text)
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or not all(_LABEL.match(label) for label in labels):
        raise AddressError(f"{text!r} is not a valid email address (bad domain {domain!r})")
    return ascii_domain


def _idna(domain: str, text: str) -> str:
    """An internationalised domain in its ASCII form: UTS #46 mapping, then IDNA 2008.

    Default-ignorable characters (zero-width spaces and joiners, soft hyphens, ...) are refused
    rather than dropped: ``exa\\u200bmple.com`` is not silently ``example.com``.
    """
    hidden = _IGNORABLE.search(domain)
    if hidden:
        raise AddressError(
            f"{text!r}: the domain holds the invisible character U+{ord(hidden.group()):04X}"
        )
    try:
        mapped = idna.uts46_remap(domain, std3_rules=False, transitional=False)
        labels = [
            label if label.isascii() else idna.alabel(label).decode("ascii")
            for label in mapped.split(".")
        ]
    except (idna.IDNAError, UnicodeError) as exc:
        raise AddressError(f"{text!r}: the domain is not a valid IDNA 2008 name ({exc})") from None
    return ".".join(labels)


def _display_name(raw: str, text: str) -> str:
    """The display name written before ``<``: a whole quoted string, or words without the
    characters that would make mail programs read another address out of it."""
    if raw.startswith('"'):
        if not _QUOTED_NAME.match(raw):
            raise AddressError(
                f"{text!r} is ambiguous: the quoted display name does not end where it should "
                '(escape a " inside it as \\")'
            )
        return _unquote(raw)
    special = _NAME_SPECIALS.search(raw)
    if special:
        raise AddressError(
            f"{text!r} is ambiguous: the display name holds {special.group()!r}; quote the name "
            '("...") or give each address as its own string'
        )
    return raw


def _split(text: str) -> tuple[str, str]:
    """Split ``text`` into (display name, addr-spec)."""
    if text.endswith(">"):
        start = text.rfind("<")
        if start == -1:
            raise AddressError(f"{text!r} is not a valid email address (unbalanced '>')")
        return _display_name(text[:start].strip(), text), text[start + 1 : -1].strip()
    if "<" in text or ">" in text:
        raise AddressError(f"{text!r} is not a valid email address (unbalanced '<')")
    if text.count("@") > 1 and ("," in text or ";" in text or " " in text):
        raise AddressError(f"{text!r} looks like several addresses: pass a list of strings")
    return "", text


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Address:
    name, spec = _split(text.strip())
    check_value("the display name", name)
    if CONTROL.search(name):
        raise AddressError(f"{text!r}: the display name contains a control character")
    local, at, domain = spec.rpartition("@")
    if not at or not local:
        raise AddressError(f"{text!r} is not a valid email address (expected local@domain)")
    if not (_DOT_ATOM.match(local) or _QUOTED_LOCAL.match(local)):
        raise AddressError(f"{text!r} is not a valid email address (bad local part {local!r})")
    if len(local.encode("utf-8")) > 64:
        raise AddressError(f"{text!r}: the local part is longer than 64 octets")
    return Address(name=name, local=local, domain=domain, ascii_domain=_ascii_domain(domain, text))


def parse_address(text: object, field: str = "address") -> Address:
    """Parse one address; raise :class:`AddressError` (or :class:`HeaderError` for a CR/LF)
    whose message starts with ``field`` and quotes the input."""
    if not isinstance(text, str):
        raise AddressError(f"{field}: {text!r} is not a string")
    if "\r" in text or "\n" in text:
        raise HeaderError(f"{field}: {text!r} contains a line break (CR or LF)")
    if not text.strip():
        raise AddressError(f"{field}: empty address")
    try:
        return _parse(text)
    except HeaderError as exc:
        raise HeaderError(f"{field}: {exc}") from None
    except AddressError as exc:
        raise AddressError(f"{field}: {exc}") from None


def parse_addresses(values: Iterable[str], field: str) -> list[Address]:
    """Parse every address of a list (see :func:`parse_address`)."""
    return [parse_address(value, field) for value in values]


def address_header(name: str, addresses: Iterable[Address], smtputf8: bool = False) -> str:
    """Render an address-list header (``To: a@x, "Doe, John" <j@x>``) ending in CRLF."""
    pieces: list[str] = []
    for address in addresses:
        own = address.header_pieces(smtputf8)
        if pieces:
            pieces[-1] += ","
            if not own[0].startswith(" "):
                own[0] = " " + own[0]
        pieces += own
    return fold(name, pieces)
