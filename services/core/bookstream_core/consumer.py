"""The stream consumer loop both services run.

Read a batch with XREADGROUP, validate every entry, move the invalid ones aside (dead
letters, with a ``rejected`` outcome for the requester), and hand the rest to the
service, which applies and acknowledges them in one atomic server-side call. At start
the worker first re-reads what its own name still holds (a previous life's pending
entries); periodically it claims entries idle too long in any consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bookstream_core.batch import Batch, Entry
from bookstream_core.config import RuntimeSettings
from bookstream_core.events import EVENT_FIELD, SCHEMA_VERSION, submission_digest
from bookstream_core.functions import CoreFunctions, DeadLetterRow, SetAside
from bookstream_core.keys import LibraryKeys
from bookstream_core.logging import get_logger
from bookstream_core.metrics import Metrics
from bookstream_core.rejected import (
    DEAD_FIELDS,
    DEAD_VALUE_BYTES,
    MAX_ENTRY_BYTES,
    MAX_FIELDS,
    Rejected,
    as_admitted,
    bad_shape,
    whole_entry,
)
from bookstream_core.service import InvalidEvent, Service
from bookstream_core.trouble import RedisTrouble, trouble
from bookstream_core.types import text

#: Dead letters logged one by one per call; the rest of a call's in one line.
LOGGED_DEAD_LETTERS = 5
IDLE_WAIT_S = 0.002  # a wait this long for one entry means the library is idle
FUTURE_MS = 86_400_000  # an entry id this far ahead of the clock was not made by Redis


class StreamConsumer:
    def __init__(
        self,
        r: aioredis.Redis,
        keys: LibraryKeys,
        service: Service,
        stream: str,
        consumer: str,
        runtime: RuntimeSettings,
        metrics: Metrics,
    ) -> None:
        self.r = r
        self.keys = keys
        self.service = service
        self.consumer = consumer
        self.runtime = runtime
        self.metrics = metrics
        self.core = CoreFunctions(r)
        self.stream = stream
        self.group = keys.group(service.name)
        self.log = get_logger(service=service.name, worker=consumer, library=keys.library)
        self._labels = {"library": keys.library, "service": service.name}
        self._idle = False
        #: Batches Redis refused for its own reasons, kept to be applied again as they are:
        #: re-reading them would count a delivery each time, and enough of those would
        #: dead-letter valid entries for a trouble that was never theirs.
        self.refused: list[list[Entry]] = []

    async def prepare(self) -> None:
        """The stream and the group (the functions are the worker's to load)."""
        try:
            await self.r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, *, own_pending: bool = False) -> list[Entry]:
        """New entries (waiting up to the block time for some), or this name's own."""
        if own_pending:
            return (await self._take("own")).entries
        if not self._idle:
            batch = await self._take("new")
            # A batch not full: the backlog is gone, wait for the next entry below.
            self._idle = len(batch.entries) < self.runtime.batch_size
            if batch.entries:
                return batch.entries
        # Nothing waiting: block until one entry comes (read whole: the only entry a
        # worker ever holds unbounded). While entries come one by one after waits (a
        # quiet library) the worker keeps blocking like this, one round trip per entry,
        # as cheap as a plain XREADGROUP; once one comes without a wait, entries are
        # queueing and batches are taken through bs1_read again.
        started = time.monotonic()
        response = await self.r.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=1, block=self.runtime.block_ms
        )
        self._idle = time.monotonic() - started > IDLE_WAIT_S
        if not response:
            return []
        read = cast(list[tuple[bytes, dict[bytes, bytes]]], response[0][1])  # type: ignore[index]
        return [whole_entry(entry_id, fields) for entry_id, fields in read]

    async def _take(self, mode: str, start: str = "0-0") -> Batch:
        return await self.core.read(
            self.stream,
            group=self.group,
            consumer=self.consumer,
            mode=mode,
            count=self.runtime.batch_size,
            max_fields=MAX_FIELDS,
            max_bytes=MAX_ENTRY_BYTES + 1024,
            min_idle_ms=self.runtime.claim_idle_ms,
            start=start,
        )

    async def handle(self, entries: Sequence[Entry]) -> None:
        """Apply a batch; raises RedisTrouble (the batch stays pending) when Redis, not
        an entry, is at fault."""
        valid: list[tuple[bytes, object]] = []
        rejected: list[Rejected] = []
        for entry in entries:
            entry = as_admitted(entry)
            entry_id, fields, count = entry.entry_id, entry.fields, entry.deliveries
            if fields is None:  # deleted from the stream while pending: nothing to apply
                await self.r.xack(self.stream, self.group, entry_id)
                continue
            reason = bad_shape(entry)
            if reason is None and _id_key(entry_id)[0] > time.time() * 1000 + FUTURE_MS:
                # Set by a producer, not by Redis; core.lua deletes it and repairs the
                # stream's ids once it is set aside.
                reason = "future_id"
            if reason is None and count > self.runtime.max_deliveries:
                reason = "too_many_deliveries"
            if reason is not None:
                named = None if entry.whole else entry.named
                rejected.append(Rejected(entry_id, fields, reason, count, entry.field_count, named))
                continue
            try:
                valid.append((entry_id, self.service.decode(self.stream, self._payload(fields))))
            except InvalidEvent as exc:
                rejected.append(Rejected(entry_id, fields, exc.reason, count))
        # Valid entries first: a malformed twin of a valid request in the same batch must
        # not answer it `rejected` before it is applied.
        if valid:
            started = time.perf_counter()
            try:
                await self.service.apply(self.stream, valid)
            except ResponseError as exc:
                if (problem := trouble(exc)) is not None:
                    raise problem from exc
                # The batch call failed as a whole: apply one by one so that only the
                # entry that fails is set aside and nothing behind it waits.
                self.log.warning("batch failed, applying one by one", error=str(exc)[:500])
                await self._apply_singly(valid)
            self.metrics.processing.labels(**self._labels).observe(time.perf_counter() - started)
            self.metrics.batch_size.labels(**self._labels).observe(len(valid))
        if rejected:
            await self.dead_letter(rejected)

    async def handle_keeping(self, entries: list[Entry]) -> None:
        """``handle``; a batch Redis refuses (RedisTrouble) is kept for ``retry_refused``."""
        try:
            await self.handle(entries)
        except (RedisTrouble, ResponseError):
            self.refused.append(entries)
            raise

    async def retry_refused(self) -> None:
        """Apply the kept batches again, as they are."""
        while self.refused:
            entries = self.refused.pop(0)
            try:
                await self._keep(entries)
                await self.handle(entries)
            except (RedisTrouble, ResponseError):
                self.refused.insert(0, entries)
                raise

    async def touch_refused(self) -> None:
        """Keep the kept batches' entries fresh while the trouble lasts (housekeeping does
        it every second), so that no other worker claims them meanwhile."""
        for entries in list(self.refused):
            with contextlib.suppress(ResponseError):
                await self._keep(entries)

    async def release_refused(self) -> None:
        """Stopping with batches Redis refused: leave their entries one delivery short, so
        that the re-read at the next start (which counts one) brings them back to the
        counts they had; a rolling restart during a trouble is not a delivery either."""
        for entries in self.refused:
            with contextlib.suppress(ResponseError):
                await self._keep(entries, uncount=1)
        self.refused.clear()

    async def _keep(self, entries: list[Entry], uncount: int = 0) -> None:
        """Hold the entries under this name with an idle time of 0 and the delivery counts
        they had when read (XCLAIM ... RETRYCOUNT): a retry is not a delivery."""
        counts: dict[int, list[bytes]] = {}
        for entry in entries:
            counts.setdefault(max(entry.deliveries - uncount, 0), []).append(entry.entry_id)
        for count, ids in counts.items():
            await self.r.xclaim(
                self.stream, self.group, self.consumer, 0, ids,  # type: ignore[arg-type]
                idle=0, retrycount=count, justid=True,
            )  # fmt: skip

    async def _apply_singly(self, valid: list[tuple[bytes, object]]) -> None:
        for entry_id, event in valid:
            try:
                await self.service.apply(self.stream, [(entry_id, event)])
            except ResponseError as exc:
                if (problem := trouble(exc)) is not None:
                    raise problem from exc
                found = cast(
                    list[tuple[bytes, dict[bytes, bytes]]],
                    await self.r.xrange(self.stream, entry_id, entry_id),
                )
                raw = found[0][1] if found else {}
                await self.dead_letter([Rejected(entry_id, raw, f"apply_failed: {exc}"[:500])])

    def _payload(self, fields: dict[bytes, bytes]) -> bytes:
        payload = fields.get(EVENT_FIELD)
        if payload is None:
            raise InvalidEvent("missing_field: the entry has no 'e' field")
        if len(payload) > MAX_ENTRY_BYTES:
            raise InvalidEvent(f"too_large: {len(payload)} bytes (at most {MAX_ENTRY_BYTES})")
        return payload

    async def dead_letter(self, rejected: list[Rejected]) -> None:
        rows: list[DeadLetterRow] = []
        identities = [item.identity() for item in rejected]
        for item, (request_id, kind) in zip(rejected, identities, strict=True):
            kept = list(item.fields.items())[:DEAD_FIELDS]
            rows.append(
                DeadLetterRow(
                    item.entry_id,
                    item.reason,
                    item.deliveries,
                    request_id,
                    kind,
                    self.service.guard_key(request_id) if request_id else "",
                    _digest(item),
                    item.field_count if item.field_count is not None else len(item.fields),
                    [(name[:256], value[:DEAD_VALUE_BYTES]) for name, value in kept],
                )
            )
        try:
            flags = await self.core.dead_letter(
                self.stream,
                self.keys.dead_letters(self.service.name),
                self.keys.domain_events,
                # Only a shelving fetch set aside is reported back (to Lending, `unfetched`).
                self.keys.replies if self.service.name == "shelving" else None,
                group=self.group,
                retention_s=self.runtime.retention_s,
                maxlen=self.runtime.events_maxlen,
                # Only clients' submissions are answered (``rejected``): they wait on it.
                outcome_prefix=self.keys.outcome("")
                if self.stream == self.keys.inbox("lending")
                else "",
                schema_version=SCHEMA_VERSION,
                rows=rows,
            )
        except ResponseError as exc:
            # Setting aside never fails for an entry's sake (its values are bounded
            # above): whatever failed is Redis's trouble, and the entries stay pending.
            raise (trouble(exc) or RedisTrouble(str(exc), lost_state=False)) from exc
        m, lib = self.metrics, self.keys.library
        logged = 0
        for item, (request_id, kind), flag in zip(rejected, identities, flags, strict=True):
            if flag == SetAside.SKIPPED:
                continue
            m.dead_letters.labels(**self._labels, reason=item.reason.split(":", 1)[0]).inc()
            m.events.labels(lib, self.service.name, self.stream, "dead_letter").inc()
            if logged < LOGGED_DEAD_LETTERS:
                logged += 1
                self.log.warning(
                    "dead letter",
                    entry=item.entry_id.decode(),
                    reason=item.reason[:200],
                    request_id=request_id or None,
                    deliveries=item.deliveries,
                )
            counter = m.outcomes_by_kind.get(kind)
            if flag == SetAside.ANSWERED and counter is not None:
                counter.labels(lib, "rejected").inc()
        if (unlogged := sum(flag != SetAside.SKIPPED for flag in flags) - logged) > 0:
            # A flood of junk is counted (metrics) and kept (dead letters), not logged
            # line by line (breaker: 50,000 one-byte pushes wrote 11 MB of log lines).
            self.log.warning("more dead letters", count=unlogged, stream=self.stream)

    async def drain_own_pending(self) -> None:
        """Entries this name read but never acknowledged (a previous life crashed)."""
        while True:
            entries = await self.read(own_pending=True)
            if not entries:
                return
            await self.handle_keeping(entries)

    async def claim(self) -> int:
        """Take over entries idle longer than the bound, from any consumer."""
        claimed_total = 0
        start = "0-0"
        while True:
            batch = await self._take("claim", start)
            if batch.entries:
                claimed_total += len(batch.entries)
                self.metrics.claims.labels(**self._labels).inc(len(batch.entries))
                await self.handle_keeping(batch.entries)
            if batch.next_start in ("0-0", ""):
                break
            start = batch.next_start
        if claimed_total:
            self.log.info("claimed idle entries", count=claimed_total)
        return claimed_total

    async def retire_gone_consumers(self, lock_key: Callable[[str], str]) -> list[str]:
        """Remove consumers whose worker is gone (no name lock) and that hold nothing.

        Run after claiming, so a dead worker's entries have moved to a live one first."""
        retired = []
        for info in await self.r.xinfo_consumers(self.stream, self.group):
            name = text(info["name"])
            if name == self.consumer or int(info["pending"]):
                continue
            if await self.core.retire_consumer(
                self.stream,
                lock_key(name),
                group=self.group,
                consumer=name,
                min_idle_ms=self.runtime.claim_idle_ms,
            ):
                retired.append(name)
        if retired:
            self.log.info(
                "removed consumers of gone workers", stream=self.stream, consumers=retired
            )
        return retired


def _digest(item: Rejected) -> str:
    """The digest of the entry's ``e`` field when it was read whole ('' if cut or none)."""
    payload = item.fields.get(EVENT_FIELD)
    return submission_digest(payload) if payload is not None and item.named is None else ""


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early when asked to stop; True if stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
