"""A semaphore shared by every process that calls the model: LLM_MAX_CONCURRENCY is a
total across concurrent runs, and one run alone may use all of it.

The slots are rows of `rag_pipeline.model_slots` (one per unit of capacity). Taking a
slot leases the row (holder, expires_at); giving it back clears it and NOTIFYs the
waiting processes. A crashed holder's lease expires: held slots are renewed every
RENEW_SECONDS and expire after LEASE_SECONDS.

One dispatcher per process talks to PostgreSQL on behalf of all its waiters, so a freed
slot costs one query per waiting process, not one per waiting coroutine. A slot freed while
another request of the same process waits goes to it directly (no round trip, the lease
kept), for HANDOFF_SECONDS after it was taken from PostgreSQL; then it goes back, so that
the other processes get their turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator

import psycopg
from psycopg_pool import AsyncConnectionPool

from rag_pipeline.ledger.connection import DEADLINES

log = logging.getLogger(__name__)

CHANNEL = "rag_pipeline_model_slots"
LEASE_SECONDS = 30
RENEW_SECONDS = 10
# Without a notification (lost, or a lease that expired) waiters still retry this often.
POLL_SECONDS = 0.5
# How long a slot passes from request to request within a process before it is given back.
HANDOFF_SECONDS = 2.0


class SharedSlots:
    """Model request slots of one kind ("llm", "embedding") shared through PostgreSQL."""

    def __init__(self, conninfo: str, password: str, kind: str, capacity: int) -> None:
        self.conninfo = conninfo
        self.password = password
        self.kind = kind
        self.capacity = capacity
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._pool: AsyncConnectionPool | None = None
        self._waiters: deque[asyncio.Future[int]] = deque()
        self._held: set[int] = set()
        self._taken_at: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self._pool = AsyncConnectionPool(self.conninfo, kwargs={
            "password": self.password, "autocommit": True,
            "application_name": "rag-pipeline-model-slots", **DEADLINES}, min_size=1, max_size=3,
            open=False)
        await self._pool.open(wait=True, timeout=30)
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO rag_pipeline.model_slots (kind, slot) SELECT %s, g FROM "
                "generate_series(0, %s - 1) g ON CONFLICT DO NOTHING", (self.kind, self.capacity))
            await conn.execute(
                "DELETE FROM rag_pipeline.model_slots WHERE kind = %s AND slot >= %s "
                "AND (holder IS NULL OR expires_at < now())", (self.kind, self.capacity))
        self._tasks = [asyncio.create_task(self._dispatch(), name=f"slots-{self.kind}"),
                       asyncio.create_task(self._listen(), name=f"slots-listen-{self.kind}"),
                       asyncio.create_task(self._renew(), name=f"slots-renew-{self.kind}")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._pool is not None:
            with contextlib.suppress(Exception):
                async with self._pool.connection() as conn:
                    await conn.execute(
                        "UPDATE rag_pipeline.model_slots SET holder = NULL, expires_at = NULL "
                        "WHERE kind = %s AND holder = %s", (self.kind, self.holder))
            await self._pool.close()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wake.set()
        try:
            slot = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted while being cancelled
                await self._release(future.result())
            raise
        try:
            yield slot
        finally:
            if not self._hand_on(slot):
                await self._release(slot)

    def _hand_on(self, slot: int) -> bool:
        """Give a freed slot to a request of this process that waits, if it is still young."""
        if time.monotonic() - self._taken_at.get(slot, 0.0) > HANDOFF_SECONDS:
            return False
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return True
        return False

    async def _release(self, slot: int) -> None:
        self._held.discard(slot)
        self._taken_at.pop(slot, None)
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn:
                await conn.execute("SELECT rag_pipeline.release_model_slot(%s, %s, %s)",
                                   (self.kind, slot, self.holder))
        except psycopg.Error as exc:  # the lease expires by itself
            log.warning("model slots: could not release slot %d (%s)", slot, exc)

    async def _take(self, count: int) -> list[int]:
        assert self._pool is not None
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE rag_pipeline.model_slots s SET holder = %s, "
                "expires_at = now() + make_interval(secs => %s) FROM (SELECT slot FROM "
                "rag_pipeline.model_slots WHERE kind = %s AND (holder IS NULL OR expires_at < "
                "now()) ORDER BY slot LIMIT %s FOR UPDATE SKIP LOCKED) free "
                "WHERE s.kind = %s AND s.slot = free.slot RETURNING s.slot",
                (self.holder, LEASE_SECONDS, self.kind, count, self.kind))
            return [row[0] for row in await cur.fetchall()]

    async def _dispatch(self) -> None:
        while True:
            while self._waiters and self._waiters[0].done():  # cancelled waiters
                self._waiters.popleft()
            if not self._waiters:
                self._wake.clear()
                await self._wake.wait()
                continue
            # Cleared before asking: a slot freed while the query runs wakes us again.
            self._wake.clear()
            try:
                slots = await self._take(len(self._waiters))
            except psycopg.Error as exc:
                log.warning("model slots: PostgreSQL unavailable (%s); retrying", exc)
                await asyncio.sleep(POLL_SECONDS)
                continue
            for slot in slots:
                while self._waiters and self._waiters[0].done():
                    self._waiters.popleft()
                if not self._waiters:
                    await self._release(slot)
                    continue
                self._held.add(slot)
                self._taken_at[slot] = time.monotonic()
                self._waiters.popleft().set_result(slot)
            if self._waiters:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def _listen(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.conninfo, password=self.password, autocommit=True,
                    application_name="rag-pipeline-model-slots-listen", **DEADLINES)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    async for notify in conn.notifies():
                        if notify.payload == self.kind:
                            self._wake.set()
            except psycopg.Error as exc:
                log.warning("model slots: lost the notification connection (%s)", exc)
                await asyncio.sleep(POLL_SECONDS)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            if not self._held:
                continue
            with contextlib.suppress(psycopg.Error):
                assert self._pool is not None
                async with self._pool.connection() as conn:
                    await conn.execute(
                        "UPDATE rag_pipeline.model_slots SET expires_at = now() + "
                        "make_interval(secs => %s) WHERE kind = %s AND holder = %s",
                        (LEASE_SECONDS, self.kind, self.holder))
