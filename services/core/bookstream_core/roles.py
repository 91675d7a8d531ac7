"""One Redis ACL user per role of a library: what each part of bookstream may do.

``bookstream setup --acl`` creates these users and ``bookstream acl`` prints them as an ACL
file; docs/security.md explains the model. Every key of a library starts with
``bs:{NAME}:`` and a service's own keys with ``bs:{NAME}:<service>:`` (keys.py), so the
rules are key patterns over that layout and several libraries can share one Redis.

Redis runs the commands of a function under its caller's rights, so a role that calls a
function needs the rights of every command the function runs; the functions check them
all before their first write (``expect_rights`` in prelude.lua), so a refused caller
leaves no partial writes.

A write a role needs on a key it does not own is granted by a Redis 7 ACL selector,
``(keys commands)``, that pairs that command with that key alone. Redis allows a command
when the root rules or ONE selector allow the command and every key it names, and it
checks each command a function runs again, on its own. FCALL asks for read and write on
every key it names (one pattern granting both), so a role's FCALL of a function that names
another's stream has a selector of its own (those functions, those keys): it grants
nothing to the commands the function runs. Redis ACLs cannot restrict arguments: an
allowed XADD may trim with MAXLEN or MINID, an allowed XCLAIM may move the group's
last-delivered id with LASTID (docs/security.md says what that leaves to each role).
"""

from __future__ import annotations

from typing import Literal

from bookstream_core.keys import LibraryKeys

Role = Literal["lending", "shelving", "client", "viewer", "operator"]
ROLES: tuple[Role, ...] = ("lending", "shelving", "client", "viewer", "operator")

#: Every role: connect, name the connection, read INFO (the eviction policy check),
#: see which functions are loaded.
_CONNECTION = (
    "+ping", "+echo", "+hello", "+select", "+info", "+time", "+client|setname",
    "+client|id", "+client|getname", "+multi", "+exec", "+discard",
    "+function|list",
)  # fmt: skip
#: Reading (key patterns still decide which keys): dashboards, status, audit, outcomes.
#: Not the reads that cost Redis far more than their reply (breaker: one LCS of an 11 KB
#: outcome with itself held Redis 0.8 s and 500 MB; SRANDMEMBER/HRANDFIELD/ZRANDMEMBER
#: with a huge negative count build a reply of any size from a small key).
_READ = (
    "+@read", "-keys", "-randomkey", "-sort_ro", "-dump", "-lolwut", "-lcs",
    "-srandmember", "-hrandfield", "-zrandmember", "+fcall_ro",
    "+subscribe", "+unsubscribe", "+psubscribe", "+punsubscribe", "+pubsub|numsub",
)  # fmt: skip
#: A worker: consume its streams, apply events through its functions, hold its name.
_WORKER = (
    "+fcall", "+xreadgroup", "+xack", "+xclaim", "+xautoclaim", "+xgroup|create",
    "+xgroup|createconsumer", "+xgroup|delconsumer", "+xgroup|setid", "+xadd", "+xdel",
    "+xsetid", "+xtrim", "+hset", "+hdel", "+hincrby", "+sadd", "+srem", "+zadd", "+zrem",
    "+set", "+del", "+unlink", "+expire", "+pexpire", "+publish", "+pubsub|numpat",
)  # fmt: skip

#: The functions each role calls naming a key it does not own (selectors below).
LENDING_SENDS = ("bs1_lending_apply", "bs1_lending_expire")
SHELVING_SENDS = ("bs1_shelving_apply", "bs1_dead_letter")
#: Every function the operator calls (it may not load them: setup does).
OPERATOR_FUNCTIONS = ("bs1_hand_over", "bs1_compare_and_set")


def user_name(library: str, role: Role) -> str:
    return f"bs-{library}-{role}"


def rules(library: str, role: Role) -> list[str]:
    """The ACL rules of one role (what ``ACL SETUSER`` takes after the password)."""
    p = LibraryKeys(library).prefix
    outcomes = f"&{p}outcome:*"
    if role == "lending":
        # Its own keys (submissions, inbox, replies, state; it admits submissions with
        # LPOP), the doorbell it waits on, the outcomes it writes and announces, the
        # history, its workers' names. Shelving's inbox: read, and XADD alone (no SET,
        # DEL, XGROUP...: breaker, a SET there stalled Shelving), the fetches it sends.
        own = [f"~{p}lending:*", f"~{p}outcome:*", f"~{p}events", f"~{p}worker:lending:*"]
        other = f"~{p}shelving:inbox"
        sends = _fcall_selector([f"~{p}lending:inbox", f"~{p}lending:replies", other,
                                 f"~{p}events"], LENDING_SENDS)  # fmt: skip
        return [*own, f"%R{other}", outcomes, f"&{p}lending:doorbell", *_CONNECTION, *_READ,
                *_WORKER, "+lpop", sends, f"({other} +xadd)"]  # fmt: skip
    if role == "shelving":
        # Its own keys and inbox, its workers' names; Lending's replies: read, and XADD
        # alone (breaker: a SET or XGROUP SETID there stalled Lending). Its dead-letter
        # call names the events stream too (FCALL's check), which it never writes.
        own = [f"~{p}shelving:*", f"~{p}worker:shelving:*"]
        other = f"~{p}lending:replies"
        sends = _fcall_selector([f"~{p}shelving:inbox", f"~{p}shelving:dead", other,
                                 f"~{p}events"], SHELVING_SENDS)  # fmt: skip
        return [*own, f"%R{other}", *_CONNECTION, *_READ, *_WORKER, sends, f"({other} +xadd)"]
    if role == "client":
        # Read what status and an outcome need (not the history of every patron's
        # outcomes, `events`, nor a pattern subscription to all of them), and submit
        # through the door only. The door runs as its caller, so its one write, an RPUSH
        # to the submissions list, is the client's: a selector grants it, with the FCALL,
        # on that list alone (a key FCALL names needs read and write in one pattern), and
        # the PUBLISH of its doorbell on that channel alone. An RPUSH only appends: no
        # write of a client reaches a stream (an XADD could trim one with MAXLEN or MINID)
        # nor what others submitted; a forged ring only wakes Lending.
        reads = [f"%R~{p}{part}" for part in ("lending:*", "shelving:*", "outcome:*", "worker:*")]
        door = f"(~{p}lending:submissions &{p}lending:doorbell +fcall|bs1_submit +rpush +publish)"
        own_outcomes = [c for c in _READ if c not in ("+psubscribe", "+punsubscribe")]
        return [*reads, outcomes, *_CONNECTION, *own_outcomes, door]
    if role == "viewer":
        return [f"%R~{p}*", outcomes, *_CONNECTION, *_READ]
    # operator: status collection (reads); the library's claim (one LibraryInstance per
    # library: SET NX, then bs1_compare_and_set to take over a stale one); scale-down
    # (bs1_hand_over: move a removed worker's pending entries to a survivor, delete its
    # consumer, mark its name retired). No EVAL or SCRIPT (breaker: EVAL "while true do
    # end" froze the shared Redis), and each write only where those need it: SET on
    # names and the claim, XCLAIM and XGROUP DELCONSUMER on the inboxes. The operator is
    # trusted with scale-down as a service is with its streams: XCLAIM's LASTID (which
    # can make Lending skip entries) and DELCONSUMER on a live consumer cannot be refused.
    inboxes = f"~{p}lending:inbox ~{p}shelving:inbox"
    names = f"~{p}worker:* ~{p}operator:claim"
    calls = _fcall_selector([inboxes, names], OPERATOR_FUNCTIONS)
    return [f"%R~{p}*", *_CONNECTION, *_READ, calls,
            f"({inboxes} +xclaim +xgroup|delconsumer)", f"({names} +set)"]  # fmt: skip


def _fcall_selector(keys: list[str], functions: tuple[str, ...]) -> str:
    """FCALL of these functions only, naming these keys only (see the module's text)."""
    return "(" + " ".join([*keys, *(f"+fcall|{name}" for name in functions)]) + ")"


def setuser_arguments(library: str, role: Role, password: str) -> list[str]:
    """``ACL SETUSER`` arguments: everything reset first, so a run replaces old rules."""
    return [user_name(library, role), "reset", "on", f">{password}", *rules(library, role)]


def acl_file_line(library: str, role: Role, password_sha256: str | None) -> str:
    """One line of an ACL file (``aclfile``); without a password hash the user exists but
    cannot log in until an admin gives it one."""
    secret = [f"#{password_sha256}"] if password_sha256 else []
    # "reset" as setup's SETUSER has it, so both make the very same user.
    words = ["user", user_name(library, role), "reset", "on", *secret, *rules(library, role)]
    return " ".join(words)
