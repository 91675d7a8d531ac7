"""TLS to Redis: the context every connection uses, the certificate files checked when
settings are built, and a failed handshake said in one line.

Verification is always on (the server's certificate against ``--tls-ca`` or the system's
CAs, and its host name); there is no setting to turn it off.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bookstream_core.settings import BY_KEY, ConfigError

if TYPE_CHECKING:
    from bookstream_core.config import RedisSettings

#: The settings that name TLS files, in the order a message names them.
FILES = ("tls_ca", "tls_cert", "tls_key")

#: OpenSSL's verify codes for a certificate that is not for the name or address dialled.
NAME_MISMATCH = (62, 64)


def client_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """The context every TLS connection uses: the server's certificate must chain to a CA
    in ``ca`` when given (those only: redis-py would trust the system's as well), else to
    one of the system's; its host name is checked; TLS 1.2 at least."""
    context = ssl.create_default_context(cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    return context


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal (a worker would hang).
    return b""


def check_tls_files(tls: bool, files: Mapping[str, str | None], names: Mapping[str, str]) -> None:
    """Refuse, naming the option (or variable) as given: TLS files without TLS, a client
    certificate without its key or the reverse, a file that cannot be read or used."""
    given = {key: path for key, path in files.items() if path is not None}
    # As given (an option or a variable); a caller that does not say: the option.
    name = {key: names.get(key) or BY_KEY[key].flags[0] for key in FILES}
    if given and not tls:
        first = next(key for key in FILES if key in given)
        raise ConfigError(f"{name[first]} needs TLS: a rediss:// URL or --ssl")
    if ("tls_cert" in given) != ("tls_key" in given):
        has, lacks = ("tls_cert", "tls_key") if "tls_cert" in given else ("tls_key", "tls_cert")
        raise ConfigError(f"{name[has]} needs {name[lacks]} (a client certificate and its key)")
    for key, path in given.items():
        if not path:
            raise ConfigError(f"{name[key]} is empty: give a file")
        try:
            with open(path, "rb") as file:
                file.read(1)
        except OSError as exc:
            raise ConfigError(f"cannot read {name[key]} {path}: {exc.strerror}") from None
    # Load them as the connection will, so that a wrong file is a setting's error now
    # rather than a failed handshake later.
    if "tls_ca" in given:
        try:
            client_context(given["tls_ca"], None, None)
        except ssl.SSLError:
            ca = given["tls_ca"]
            raise ConfigError(f"{name['tls_ca']} {ca} holds no PEM certificate") from None
    if "tls_cert" in given:
        _check_pair(given["tls_cert"], given["tls_key"], name["tls_cert"], name["tls_key"])


def _check_pair(cert: str, key: str, cert_name: str, key_name: str) -> None:
    try:
        client_context(None, cert, key)
    except ssl.SSLError as exc:
        if _encrypted(key):
            raise ConfigError(
                f"{key_name} {key} is encrypted: give the key unencrypted (there is no "
                "passphrase setting)"
            ) from None
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"{key_name} {key} is not the key of {cert_name} {cert}") from None
        raise ConfigError(
            f"{cert_name} {cert} and {key_name} {key} are not a PEM certificate and its key "
            f"({_words(exc)})"
        ) from None


def _encrypted(key: str) -> bool:
    with open(key, "rb") as file:
        return b"ENCRYPTED" in file.read(4096)


#: How long ``diagnose`` listens for a server's complaint.
LISTEN_S = 1.0


def tls_failure(exc: BaseException, settings: RedisSettings) -> str | None:
    """One line for a TLS handshake that failed, or None when ``exc`` is not one."""
    found = _ssl_error(exc)
    return None if found is None else _explain(found, settings)


def diagnose(exc: BaseException, settings: RedisSettings) -> str | None:
    """``tls_failure``, and when a TLS connection was merely cut off, the reason asked of
    the server (blocks up to LISTEN_S): TLS 1.3 refuses a client certificate, missing or
    untrusted, after the handshake, and a client that has already sent its first command
    may see only the connection reset, not the refusal."""
    found = _ssl_error(exc)
    url = settings.url or ""
    if found is not None and not isinstance(found, CLOSED):
        if found.reason in NOT_TLS and _speaks_plain(url):
            return _wrong_scheme(exc, settings)
        return _explain(found, settings)
    if url.startswith("rediss://") and _cut_off(exc):
        found = _listen(url, settings) or found
    if found is None and _mismatch(url, exc):
        return _wrong_scheme(exc, settings)
    return None if found is None else _explain(found, settings)


#: OpenSSL's words when the peer's first bytes are no TLS record (a plain Redis's reply).
NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
           "UNKNOWN_PROTOCOL", "HTTP_REQUEST")  # fmt: skip


def _mismatch(url: str, exc: BaseException) -> bool:
    """A plain connection cut off or left unanswered by a server that speaks TLS, or a TLS
    one by a server that speaks plain RESP (asked of the server, blocking up to LISTEN_S):
    the error alone (a reset, a timeout) says nothing of TLS."""
    if not (_cut_off(exc) or any("Timeout" in type(e).__name__ for e in _chain(exc))):
        return False
    if url.startswith("redis://"):
        return _speaks_tls(url)
    return url.startswith("rediss://") and _speaks_plain(url)


def _wrong_scheme(exc: BaseException, settings: RedisSettings) -> str:
    where = settings.describe()
    if (settings.url or "").startswith("rediss://"):
        return (
            f"cannot reach Redis at {where}: {exc} (is the server not using TLS? it answers "
            "plain RESP there: use redis://, without --ssl and the --tls-* options)"
        )
    return (
        f"cannot reach Redis at {where}: {exc} (is the server using TLS? it answers a TLS "
        "handshake there: use rediss:// (or --ssl) and --tls-ca for a private CA)"
    )


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or 6379


def _speaks_tls(url: str) -> bool:
    """Whether the server answers a TLS handshake. Nothing is sent but the handshake, so
    the server's certificate need not be trusted here: only whether it speaks TLS."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(_address(url), timeout=LISTEN_S) as raw,
            context.wrap_socket(raw) as _,
        ):
            return True
    except ssl.SSLError as exc:  # an alert is TLS too (a client certificate required)
        return "ALERT" in str(exc.reason or "")
    except OSError:
        return False


def _speaks_plain(url: str) -> bool:
    """Whether the server answers a plain PING (any RESP reply: +PONG, -NOAUTH...)."""
    try:
        with socket.create_connection(_address(url), timeout=LISTEN_S) as raw:
            raw.sendall(b"PING\r\n")
            return raw.recv(1)[:1] in (b"+", b"-")
    except OSError:
        return False


#: A TLS connection closed without a reason.
CLOSED = (ssl.SSLEOFError, ssl.SSLZeroReturnError)


def _cut_off(exc: BaseException) -> bool:
    closed = (ConnectionResetError, BrokenPipeError, *CLOSED)
    return any(isinstance(e, closed) or "closed by server" in str(e) for e in _chain(exc))


def _listen(url: str, settings: RedisSettings) -> ssl.SSLError | None:
    """Connect, send nothing, and wait for the server's alert, if it sends one."""
    host, port = _address(url)
    try:
        context = client_context(settings.tls_ca, settings.tls_cert, settings.tls_key)
        with (
            socket.create_connection((host, port), timeout=LISTEN_S) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.recv(1)
    except ssl.SSLError as exc:
        return exc
    except OSError:  # silence (a timeout: no complaint), or the server is gone
        return None
    return None


def _explain(found: ssl.SSLError, settings: RedisSettings) -> str:
    where = settings.describe()
    if isinstance(found, ssl.SSLCertVerificationError):
        reason = str(found.verify_message).rstrip(".")
        if found.verify_code in NAME_MISMATCH:
            return (
                f"TLS: the certificate of Redis at {where} is not for that address ({reason}): "
                "connect by a host name or address the certificate names"
            )
        return (
            f"TLS: the certificate of Redis at {where} is not trusted ({reason}): give the CA "
            "that signed it with --tls-ca"
        )
    words, reason = _words(found), str(found.reason or "")
    if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED" or (
        settings.tls_cert is None and reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"
    ):
        # TLS 1.3 reports a missing client certificate after the handshake, as an alert.
        return (
            f"TLS: Redis at {where} requires a client certificate ({words}): give "
            "--tls-cert and --tls-key"
        )
    if settings.tls_cert is not None and ("CERTIFICATE" in reason or "UNKNOWN_CA" in reason):
        return (
            f"TLS: Redis at {where} refused the client certificate ({words}): is --tls-cert "
            "signed by a CA the server trusts?"
        )
    return f"TLS with Redis at {where} failed: {words}"


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The SSLError behind redis-py's ConnectionError (its cause or context), if any."""
    return next((e for e in _chain(exc) if isinstance(e, ssl.SSLError)), None)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes or contexts, the way redis-py wraps socket errors."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in found):
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _words(exc: ssl.SSLError) -> str:
    """OpenSSL's own words, without the bracketed code and the source line."""
    found = re.search(r"\] (.+?)(?: \(_ssl\.c:\d+\))?$", str(exc.args[-1] if exc.args else exc))
    return found.group(1) if found else str(exc.reason or exc).lower()
