"""Redis addresses: what the original sample's ``-a`` accepted and URLs, normalized and
checked before anything connects, and shown without their password.

A URL redis-py cannot use would otherwise fail deep inside the first connection, as a
traceback (``?db=x``, an unclosed ``[`` of an IPv6 address, an unknown query parameter is
passed on to the connection as a keyword). :func:`check_url` asks redis-py's own parser
now and turns its refusal into one line; no message repeats a password.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from redis.connection import parse_url

from bookstream_core.settings import ConfigError


def normalize_address(address: str) -> str:
    """Accept what the original sample's ``-a`` accepted, and URLs."""
    address = address.strip()
    if not address:
        raise ConfigError("empty Redis address")
    if "://" in address:
        scheme = address.split("://", 1)[0]
        if scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"unsupported Redis URL scheme {scheme!r} (redis, rediss, unix)")
        try:
            parts = urlsplit(address)
        except ValueError as exc:  # an unclosed [ of an IPv6 address
            raise _invalid(address, exc) from None
        try:
            port = parts.port
        except ValueError:
            port = -1
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"invalid port in Redis URL {redacted(address)!r} (1-65535)")
        return address
    if address.startswith(("/", ".")):
        return f"unix://{Path(address).absolute()}"
    host, _, port_text = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ConfigError(f"invalid port in Redis address {address!r} (1-65535)")
    return f"redis://{host or 'localhost'}:{port_text or 6379}"


def check_url(url: str) -> None:
    """Refuse a (normalized) URL redis-py would not connect with as written: a query
    parameter other than ``db`` (redis-py hands any other to the connection, where
    ``ssl_cert_reqs=none`` would turn verification off and ``SSL_CERT_REQS`` is a
    TypeError), a path that is no database number (silently ignored), a value its
    parser refuses."""
    parts = urlsplit(url)
    names = sorted(parse_qs(parts.query, keep_blank_values=True))
    if any(name.lower().startswith("ssl") for name in names):
        raise ConfigError(
            "a Redis URL carries no TLS settings (ssl_...): give --tls-ca, --tls-cert, "
            "--tls-key; verification is always on"
        )
    others = [name for name in names if name != "db"]
    if others:
        raise ConfigError(
            f"a Redis URL takes no query parameter but db, not {', '.join(others)}: "
            "give the connection's settings as options or variables"
        )
    number = unquote(parts.path).replace("/", "")
    if parts.scheme != "unix" and number and not re.fullmatch("[0-9]+", number):
        raise ConfigError(
            f"invalid Redis URL {redacted(url)!r}: its path is a database number (/0)"
        )
    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise _invalid(url, exc) from None


def redacted(url: str) -> str:
    """The URL with its password as ***, even a URL ``urlsplit`` cannot parse: a message
    about a bad URL must not show its password. (Everything between ``user:`` and the
    last ``@`` counts as the password, as no password is shown by halves.)"""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if sep and at and ":" in userinfo:
        url = f"{scheme}://{userinfo.partition(':')[0]}:***@{host}"
    # redis-py reads credentials from the query too (?password=, ?pass%77ord=...): every
    # query value, and a fragment, is hidden as well.
    url, hashed, _ = url.partition("#")
    base, asked, query = url.partition("?")
    if asked:
        pairs = (pair.partition("=") for pair in query.split("&"))
        base += "?" + "&".join(f"{k}=***" if eq else "***" for k, eq, _ in pairs)
    return base + ("#***" if hashed else "")


def _invalid(url: str, exc: ValueError) -> ConfigError:
    reason = str(exc)
    password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
    if password:  # the parser's reason may quote part of the URL
        reason = reason.replace(password, "***")
    return ConfigError(f"invalid Redis URL {redacted(url)!r}: {reason}")
