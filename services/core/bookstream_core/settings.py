"""The one table of settings: each row makes a command-line option, its ``BOOKSTREAM_*``
variable, its ``--help`` line and its row of the README's settings table.

A value comes from (highest first) the option, the variable, the default. It is parsed
here, once, and a bad one is reported under the name the user typed it as (``--db`` or
``BOOKSTREAM_REDIS_DB``).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

ENV_PREFIX = "BOOKSTREAM_"
#: Readers of a setting's help besides the programs with options: the operator reads a
#: setting's variable only (it has no options); the README shows every reader's help.
OPERATOR, README = "operator", "README"

SettingKind = Literal["text", "int", "seconds", "flag", "choice"]
#: Which parsers list a setting (``USED_BY``): every command that talks to Redis, the
#: workers (all or only lending's), or none (a variable only).
Scope = Literal["redis", "client", "worker", "lending", "lending_worker", "embedded", "operator"]


class ConfigError(ValueError):
    """A setting is malformed; the message names the option or the variable."""


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    flags: tuple[str, ...]
    env: str
    help: str
    scope: Scope
    kind: SettingKind = "text"
    default: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    #: Who takes it besides its scope's programs: commands (``info``) that list its option
    #: although they are not "commands" (USED_BY), or ``operator`` (the variable only).
    also: tuple[str, ...] = ()
    #: What it means to particular programs where ``help`` would mislead them: (programs,
    #: their help) pairs; ``operator`` for the operator. A help names another setting as
    #: ``{key}``: each reader gets the name it gives it by (``named``).
    help_for: tuple[tuple[tuple[str, ...], str], ...] = ()

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.env

    @property
    def positional(self) -> bool:
        return bool(self.flags) and not self.flags[0].startswith("-")

    def describe(self, program: str | None = None) -> str:
        """The meaning to ``program`` (None: a program with options and no help of its
        own), with the default: its --help text, or the operator's."""
        text = next((h for programs, h in self.help_for if program in programs), self.help)
        return self._with_default(named(text, program))

    def readme(self) -> str:
        """The README's meaning: the help, then each program's own."""
        parts = [self._with_default(named(self.help, README))]
        for programs, text in self.help_for:
            who = ", ".join("the operator" if p == OPERATOR else f"`{p}`" for p in programs)
            parts.append(f"For {who}: {named(text, README)}")
        return ". ".join(parts)

    def _with_default(self, text: str) -> str:
        return f"{text} (default {self.default})" if self.default is not None else text


def _s(
    key: str, flags: tuple[str, ...], env: str, help_: str, scope: Scope, **kw: object
) -> Setting:
    return Setting(key, flags, env, help_, scope, **kw)  # type: ignore[arg-type]


SETTINGS: tuple[Setting, ...] = (
    _s("redis", ("--redis",), "REDIS_URL", "redis://, rediss:// or unix:// URL", "redis",
       metavar="URL"),
    _s("address", ("-a", "--address"), "REDIS_ADDRESS", "host[:port] or a unix socket path",
       "redis", metavar="ADDR"),
    _s("db", ("--db",), "REDIS_DB", "database number", "redis", kind="int", minimum=0,
       metavar="N",
       also=("bench",)),
    # Each program needs its own role: one list, true for all, rather than a wrong one.
    _s("redis_user", ("--user",), "REDIS_USER",
       "Redis ACL user, not the borrower (default: the default user); `bookstream setup "
       "--acl` makes bs-LIBRARY-ROLE: client for request, return, outcome; viewer for "
       "status, audit, dead-letters list and show; lending or shelving for a worker; "
       "setup, serve, bench, dead-letters retry and purge need an admin", "redis",
       metavar="NAME", also=("bench",)),
    _s("password", ("--password",), "REDIS_PASSWORD", "Redis password (prefer {password_file})",
       "redis", metavar="P",
       also=("bench",)),
    _s("password_file", ("--password-file",), "REDIS_PASSWORD_FILE",
       "a file holding the Redis password, read again for every new connection (a rotated "
       "password is picked up)", "redis", metavar="PATH",
       also=("bench",)),
    _s("ssl", ("--ssl",), "REDIS_SSL",
       "use TLS (as rediss:// does); the server's certificate and host name are always "
       "verified", "redis", kind="flag",
       also=("bench",)),
    _s("tls_ca", ("--tls-ca",), "REDIS_TLS_CA",
       "CA certificates (PEM) the server's certificate must chain to (default: the "
       "system's CAs)", "redis", metavar="PATH",
       also=("bench", "operator")),
    _s("tls_cert", ("--tls-cert",), "REDIS_TLS_CERT",
       "client certificate (PEM) for a Redis that asks for one; needs {tls_key}", "redis",
       metavar="PATH",
       also=("bench", "operator")),
    _s("tls_key", ("--tls-key",), "REDIS_TLS_KEY",
       "the client certificate's private key (PEM, unencrypted)", "redis", metavar="PATH",
       also=("bench", "operator")),
    _s("library", ("--library",), "LIBRARY",
       "library namespace; every key carries {NAME}", "redis", default="main", metavar="NAME",
       also=("info", "acl")),
    _s("timeout", ("--timeout",), "TIMEOUT",
       "seconds to wait for Redis, and (request, return, outcome) for an outcome", "client",
       kind="seconds",
       default="10", metavar="S"),
    _s("home", (), "HOME",
       "the embedded Redis' directory, mode 0700: an absolute path, new, empty or the "
       "embedded Redis' own (default $XDG_STATE_HOME/bookstream, else "
       "~/.local/state/bookstream)", "embedded"),
    _s("appendfsync", (), "APPENDFSYNC", "the embedded Redis' AOF policy: everysec or always",
       "embedded", kind="choice", choices=("everysec", "always"), default="everysec"),
    _s("name", ("name",), "WORKER_NAME",
       "unique worker name, 1-200 characters from '!' to '~' (generated if omitted)", "worker",
       metavar="NAME",
       help_for=((("serve",), "the name of both its workers, one of each service, 1-200 "
                  "characters from '!' to '~' (each generated if omitted)"),)),
    _s("force", ("-f", "--force"), "FORCE", "take the name even if a live worker holds it",
       "worker", kind="flag"),
    _s("metrics_port", ("--metrics-port",), "METRICS_PORT",
       "serve /metrics, /healthz, /readyz on this port", "worker", kind="int", minimum=0,
       maximum=65535, metavar="P"),
    _s("metrics_host", ("--metrics-host",), "METRICS_HOST",
       "address the metrics port listens on; 0.0.0.0 for every interface, as a pod needs for "
       "its probes and Prometheus", "worker", default="127.0.0.1", metavar="ADDR"),
    _s("log_format", ("--log-format",), "LOG_FORMAT",
       "console (readable lines) or json (one object per line)", "worker", kind="choice",
       choices=("console", "json"), default="console",
       also=("operator",)),
    _s("log_level", ("--log-level",), "LOG_LEVEL",
       "info: a Lending worker logs one line per outcome; warning for benchmarks", "worker",
       kind="choice",
       choices=("debug", "info", "warning", "error"), default="info",
       also=("operator",),
       help_for=(((OPERATOR,), "info logs each event it posts on a LibraryInstance and "
                  "kopf's line per handler run; warning only errors (the events stay on "
                  "the LibraryInstance)"),
                 (("bookstream-shelving",), "info: its start and stop and its claims of "
                  "idle entries (no line per fetch or reshelving); warning for benchmarks"))),
    _s("user_limit", ("--user-limit",), "USER_LIMIT", "books one user may hold", "lending",
       kind="int", minimum=1, default="5", metavar="N",
       help_for=((("audit",), "the Lending workers' limit of books per user, which the "
                  "audit holds every user's loans to"),)),
    _s("storage_capacity", ("--storage-capacity",), "STORAGE_CAPACITY",
       "automated storage capacity", "lending", kind="int", minimum=0, default="20",
       metavar="N",
       help_for=((("audit",), "the Lending workers' automated storage capacity, which the "
                  "audit holds the storage to"),)),
    # Redis serves nobody else while one call applies a batch.
    _s("batch_size", ("--batch-size",), "BATCH_SIZE",
       "entries read and applied per call, at most 10000: Redis serves no other client while "
       "it applies one", "worker", kind="int", minimum=1, maximum=10000, default="200",
       metavar="N",
       also=("bench",)),
    _s("in_flight", ("--in-flight",), "IN_FLIGHT",
       "batches one worker has applying at once: Redis works on the next while the worker "
       "accounts for the last", "worker", kind="int", minimum=1, default="3", metavar="N",
       also=("bench",)),
    _s("claim_idle_ms", ("--claim-idle-ms",), "CLAIM_IDLE_MS",
       "claim entries idle this long from any consumer", "worker", kind="int", minimum=1,
       default="10000", metavar="MS"),
    _s("max_deliveries", ("--max-deliveries",), "MAX_DELIVERIES",
       "dead-letter an entry delivered more often", "worker", kind="int", minimum=1,
       default="5", metavar="N"),
    _s("retention", ("--retention",), "RETENTION_S",
       "seconds outcomes and idempotency records are kept: how long a client may resubmit "
       "an id", "worker", kind="int", minimum=1, default="86400", metavar="S",
       also=("bench",),
       help_for=((("bookstream-shelving",), "seconds Shelving remembers each fetch and "
                  "reshelving it applied, so that one delivered again is not applied twice"),)),
    _s("request_deadline", ("--request-deadline",), "REQUEST_DEADLINE_S",
       "seconds a request may wait for Shelving before it is denied (shelving_timeout) and "
       "its books go back", "lending_worker", kind="int", minimum=1, default="300", metavar="S"),
    _s("operator_interval", (), "OPERATOR_INTERVAL",
       "seconds between two passes over one LibraryInstance (status, autoscaling)",
       "operator", kind="seconds", default="15"),
    _s("operator_namespaces", (), "OPERATOR_NAMESPACES",
       "comma-separated namespaces to watch; empty: every namespace (a ClusterRole)",
       "operator"),
    _s("operator_peering", (), "OPERATOR_PEERING",
       "kopf peering name; empty: standalone (one replica)", "operator"),
    _s("operator_priority", (), "OPERATOR_PRIORITY", "kopf peering priority", "operator",
       kind="int", default="0"),
    _s("operator_liveness", (), "OPERATOR_LIVENESS", "kopf's liveness endpoint", "operator",
       default="http://0.0.0.0:8080/healthz"),
    _s("operator_watch_timeout", (), "OPERATOR_WATCH_TIMEOUT",
       "seconds one watch request of the Kubernetes API lasts", "operator", kind="int",
       minimum=1, default="300"),
    _s("lock_ttl_ms", (), "LOCK_TTL_MS", "worker-name lock TTL in ms (renewed every third)",
       "worker", kind="int", minimum=100, default="15000"),
    _s("give_up_s", (), "GIVE_UP_S",
       "seconds housekeeping may keep failing (Redis reachable) before the worker exits 1",
       "worker", kind="int", minimum=1, default="60"),
)  # fmt: skip

BY_KEY = {s.key: s for s in SETTINGS}


def named(text: str, program: str | None) -> str:
    """A help's ``{key}`` as its reader gives that setting: the operator by its variable, a
    program by its option, the README by both (``{NAME}`` is no setting: left as it is)."""

    def name(found: re.Match[str]) -> str:
        s = BY_KEY.get(found[1])
        if s is None:
            return found[0]
        option = s.flags[-1] if s.flags and not s.positional else None
        if option is None or program == OPERATOR:
            return s.variable
        return f"{option} or {s.variable}" if program == README else option

    return re.sub(r"\{([a-z_]+)\}", name, text)


def rows(*scopes: Scope) -> list[Setting]:
    return [s for s in SETTINGS if s.scope in scopes]


def add_options(
    parser: argparse._ActionsContainer, settings: Iterable[Setting], program: str | None = None
) -> None:
    """One option per row that has one; its help (``program``'s own, if the row has one)
    names the variable."""
    for s in settings:
        if not s.flags:
            continue
        help_ = f"{s.describe(program)} [{s.variable}]"
        if s.positional:
            parser.add_argument(s.key, nargs="?", metavar=s.metavar, help=help_)
        elif s.kind == "flag":
            parser.add_argument(*s.flags, dest=s.key, action="store_true", default=None,
                                help=help_)  # fmt: skip
        else:
            metavar = "|".join(s.choices) if s.choices else s.metavar
            parser.add_argument(*s.flags, dest=s.key, metavar=metavar, help=help_)


def raw(
    key: str, args: argparse.Namespace | None, env: Mapping[str, str]
) -> tuple[str | None, str]:
    """The text given for a setting and the name it was given under; (None, "") if none.

    An empty option is a value (``--library ''`` is an error, not the default); an empty
    variable counts as unset, as shells and manifests write them."""
    s = BY_KEY[key]
    value = getattr(args, key, None) if args is not None else None
    if value is not None:
        name = "/".join(s.flags) if s.flags and not s.positional else s.metavar or key
        return (str(value) if value is not True else "1"), name
    from_env = env.get(s.variable)
    if from_env not in (None, ""):
        return from_env, s.variable
    return None, ""


def text(key: str, args: argparse.Namespace | None, env: Mapping[str, str]) -> str | None:
    value, name = raw(key, args, env)
    s = BY_KEY[key]
    if value is None:
        return s.default
    if s.kind == "choice" and value.strip().lower() not in s.choices:
        raise ConfigError(f"{name} must be one of {', '.join(s.choices)}, not {value!r}")
    return value.strip().lower() if s.kind == "choice" else value


def integer(key: str, args: argparse.Namespace | None, env: Mapping[str, str]) -> int | None:
    value, name = raw(key, args, env)
    s = BY_KEY[key]
    if value is None:
        return None if s.default is None else int(s.default)
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
    if s.minimum is not None and number < s.minimum:
        raise ConfigError(f"{name} must be at least {s.minimum}, not {number}")
    if s.maximum is not None and number > s.maximum:
        raise ConfigError(f"{name} must be at most {s.maximum}, not {number}")
    return number


def seconds(key: str, args: argparse.Namespace | None, env: Mapping[str, str]) -> float:
    value, name = raw(key, args, env)
    value = value if value is not None else BY_KEY[key].default
    try:
        number = float(value or "")
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
    return number


YES, NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def flag(key: str, args: argparse.Namespace | None, env: Mapping[str, str]) -> bool:
    value, name = raw(key, args, env)
    if value is None:
        return False
    word = value.strip().lower()
    if word not in YES + NO:
        # BOOKSTREAM_REDIS_SSL=maybe was silently "off": a typo must not turn TLS off.
        raise ConfigError(f"{name} must be one of {', '.join(YES + NO)}, not {value!r}")
    return word in YES


PIPE = "\\|"
#: The programs the README's words for a setting's users stand for (a test holds every
#: parser to them): "commands" are those that talk to the Redis they are told of, each
#: worker program is a worker (``serve`` runs one of each service).
COMMANDS = ("request", "return", "outcome", "status", "audit", "dead-letters", "setup")
WORKERS = ("bookstream-lending", "bookstream-shelving", "serve")
LENDING_WORKERS = ("bookstream-lending", "serve")
#: Who takes a setting, in the README's words, and the programs whose options list it.
USED_BY: dict[Scope, tuple[str, tuple[str, ...]]] = {
    "redis": ("commands, workers", COMMANDS + WORKERS),
    "client": ("commands", COMMANDS),
    "worker": ("workers", WORKERS),
    "lending": ("Lending workers, `audit`", (*LENDING_WORKERS, "audit")),
    "lending_worker": ("Lending workers", LENDING_WORKERS),
    # A variable only, read by whatever starts the embedded Redis.
    "embedded": ("the embedded Redis", ()),
    # Variables only: the operator has no options.
    "operator": ("the operator (variable)", ()),
}


def takers(s: Setting) -> tuple[str, ...]:
    """The programs whose options list the setting."""
    return USED_BY[s.scope][1] + tuple(a for a in s.also if a != OPERATOR)


def _used_by(s: Setting) -> str:
    words = [USED_BY[s.scope][0]]
    words += [f"`{a}`" for a in s.also if a != OPERATOR]
    words += ["the operator (variable)"] if OPERATOR in s.also else []
    return ", ".join(words)


def _legend() -> str:
    def names(programs: tuple[str, ...]) -> str:
        return ", ".join(f"`{p}`" for p in programs)

    return (
        f"*commands*: {names(COMMANDS)}; *workers*: {names(WORKERS)}; *Lending workers*: "
        f"{names(LENDING_WORKERS)}. `info` and `acl` take only `--library`; `demo` and "
        "`bench` name a Redis only with their own `--redis` option (never a variable: each "
        "empties a library on it)."
    )


def markdown_table() -> str:
    """The README's settings table, made from the rows."""
    lines = ["| option | variable | for | meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        if not s.flags:
            option = "(none)"
        elif s.positional:
            option = f"`{s.metavar}`"
        else:
            # A table cell's pipe is escaped, or Markdown starts a new cell there.
            value = PIPE.join(s.choices) if s.choices else s.metavar
            arg = f" {value}" if s.kind != "flag" else ""
            option = "`" + "/".join(s.flags) + arg + "`"
        lines.append(f"| {option} | `{s.variable}` | {_used_by(s)} | {s.readme()} |")
    return "\n".join([*lines, "", _legend()])
