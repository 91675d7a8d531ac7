"""The benchmark workload of docs/design.md §5, seeded and deterministic.

1,000 users, 20,000 books whose popularity follows a Zipf-like law (book k is asked
for in proportion to 1/k), about 70 % requests of 1-3 books and about 30 % returns of
books the same user asked for earlier (whether or not they got them: a return of a
book one does not hold is a normal, denied, part of the traffic).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import msgspec

USERS = 1_000
BOOKS = 20_000
RETURN_SHARE = 0.30
ZIPF_EXPONENT = 1.0
MAX_REQUEST_BOOKS = 3

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class WorkloadEvent:
    request_id: str
    kind: str  # "request" | "return"
    payload: bytes  # the inbox entry's ``e`` field


def book_id(n: int) -> str:
    return f"book-{n:05d}"


def user_id(n: int) -> str:
    return f"user-{n:04d}"


def generate(
    n: int,
    seed: int,
    *,
    users: int = USERS,
    books: int = BOOKS,
    return_share: float = RETURN_SHARE,
    id_prefix: str = "bench",
) -> list[WorkloadEvent]:
    """``n`` events; the same ``seed`` always yields the same events."""
    rng = random.Random(seed)
    cum_weights = list(itertools.accumulate(1.0 / (k + 1) ** ZIPF_EXPONENT for k in range(books)))
    population = range(books)
    asked: dict[int, list[int]] = {}  # user -> books asked for and not yet returned
    askers: list[int] = []  # users with something in ``asked`` (for a uniform pick)
    where: dict[int, int] = {}  # user -> index in askers
    events: list[WorkloadEvent] = []
    for i in range(n):
        rid = f"{id_prefix}-{seed}-{i:07d}"
        if askers and rng.random() < return_share:
            user = askers[rng.randrange(len(askers))]
            pile = asked[user]
            count = min(len(pile), rng.randint(1, MAX_REQUEST_BOOKS))
            chosen = rng.sample(pile, count)
            for b in chosen:
                pile.remove(b)
            if not pile:  # swap-remove the user from askers
                last = askers.pop()
                idx = where.pop(user)
                if last != user:
                    askers[idx] = last
                    where[last] = idx
            kind, picked = "return", chosen
        else:
            user = rng.randrange(users)
            wanted = rng.randint(1, MAX_REQUEST_BOOKS)
            picked = list(dict.fromkeys(rng.choices(population, cum_weights=cum_weights, k=wanted)))
            pile = asked.setdefault(user, [])
            if not pile:
                where[user] = len(askers)
                askers.append(user)
            pile.extend(b for b in picked if b not in pile)
            kind = "request"
        payload = _encode(
            {
                "v": 1,
                "type": kind,
                "id": rid,
                "user": user_id(user),
                "books": [book_id(b) for b in picked],
            }
        )
        events.append(WorkloadEvent(rid, kind, payload))
    return events
