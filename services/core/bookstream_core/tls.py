"""TLS to Redis: the context every connection uses, and the certificate files checked
when settings are built.

Verification is always on (the server's certificate against ``--tls-ca`` or the system's
CAs, and its host name); there is no setting to turn it off.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping

from bookstream_core.settings import BY_KEY, ConfigError

#: The settings that name TLS files, in the order a message names them.
FILES = ("tls_ca", "tls_cert", "tls_key")


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


def _words(exc: ssl.SSLError) -> str:
    """OpenSSL's own words, without the bracketed code and the source line."""
    found = re.search(r"\] (.+?)(?: \(_ssl\.c:\d+\))?$", str(exc.args[-1] if exc.args else exc))
    return found.group(1) if found else str(exc.reason or exc).lower()
