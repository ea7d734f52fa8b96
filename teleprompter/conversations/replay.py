"""`teleprompter replay CONVERSATION`: one conversation's timeline, merged across topics.

History is read first (bounded: up to the end each partition has now), ordered by event time
and printed; `--follow` then prints new entries as they arrive (half a second late, to put
them in event-time order) until the conversation's end marker has been read (plus whatever was
written up to then), Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Final, TextIO

from core.kafka.catalog import TopicCatalog
from core.settings import Settings
from schemas.codec import default_codec
from teleprompter.conversations.finder import ConversationFinder, UnknownConversationError
from teleprompter.conversations.render import OutputFormat, TableWriter, entry_json, source
from teleprompter.conversations.timeline import (
    DeltaView,
    TimelineBuilder,
    TimelineEntry,
    sort_entries,
)
from teleprompter.event_log.reader import EventLogError, EventLogReader, UnknownTopicError
from teleprompter.event_log.times import format_time
from teleprompter.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE

logger = logging.getLogger(__name__)

# How long a followed entry waits for entries of other topics that happened before it.
REORDER_MS: Final = 500


@dataclass(frozen=True, kw_only=True)
class ReplayRequest:
    conversation_id: str
    from_ms: int | None = None
    to_ms: int | None = None
    output: OutputFormat = "table"
    follow: bool = False
    deltas: DeltaView = "runs"


def replay(
    settings: Settings,
    request: ReplayRequest,
    *,
    out: TextIO,
    err: Callable[[str], None],
) -> int:
    """Print the conversation's timeline to `out`; returns the exit code."""
    catalog = TopicCatalog.from_settings(settings)
    try:
        with (
            _stop_on_sigterm(),
            EventLogReader(
                bootstrap_servers=settings.bootstrap_servers,
                codec=default_codec(),
                keys=[request.conversation_id.encode()],
            ) as reader,
        ):
            finder = ConversationFinder(reader, catalog, request.conversation_id)
            printer = _Printer(request, out=out)
            printer.history(_history(finder, request, err=err))
            if request.follow:
                printer.live(_Follower(finder, request))
    except (UnknownTopicError, UnknownConversationError) as exc:
        err(f"teleprompter: {exc}")
        return EXIT_USAGE
    except EventLogError as exc:
        err(f"teleprompter: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM before the follow began: a clean stop all the same
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and let nothing flush into the pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def _history(
    finder: ConversationFinder, request: ReplayRequest, *, err: Callable[[str], None]
) -> list[TimelineEntry]:
    builder = TimelineBuilder(is_reply_topic=finder.is_reply_topic, deltas=request.deltas)
    entries: list[TimelineEntry] = []
    try:
        for record in finder.history(from_ms=request.from_ms, to_ms=request.to_ms):
            entries += builder.add(record)
    except UnknownConversationError:
        if not request.follow:
            raise
        err(f"teleprompter: no record of {request.conversation_id!r} yet; waiting for it")
    entries += builder.flush()
    kept = [e for e in entries if finder.in_window(e.at_ms, request.from_ms, request.to_ms)]
    if entries and not kept:
        err(f"teleprompter: {request.conversation_id!r} has no events in the window given")
    return sort_entries(kept)


class _Follower:
    """New entries of a live call, batch by batch, in event-time order.

    Records of different topics are fetched independently, so one written later may be read
    first; entries are held `reorder_ms` and let out in event-time order (a watermark).
    `flush` lets out everything, with the runs still open.
    """

    def __init__(
        self, finder: ConversationFinder, request: ReplayRequest, *, reorder_ms: int = REORDER_MS
    ) -> None:
        self._finder = finder
        self._builder = TimelineBuilder(is_reply_topic=finder.is_reply_topic, deltas=request.deltas)
        self._reorder_ms = reorder_ms
        self._held: list[TimelineEntry] = []

    def batches(self) -> Iterator[list[TimelineEntry]]:
        for batch in self._finder.follow():
            now_ms = int(time.time() * 1000)
            for record in batch:
                self._held += self._builder.add(record)
            self._held += self._builder.expire(now_ms=now_ms)
            watermark = now_ms - self._reorder_ms
            due = [entry for entry in self._held if entry.at_ms <= watermark]
            self._held = [entry for entry in self._held if entry.at_ms > watermark]
            yield sort_entries(due)

    def flush(self) -> list[TimelineEntry]:
        entries = sort_entries(self._held + self._builder.flush())
        self._held = []
        return entries


class _Printer:
    def __init__(self, request: ReplayRequest, *, out: TextIO) -> None:
        self._request = request
        self._out = out
        self._table: TableWriter | None = None

    def history(self, entries: list[TimelineEntry]) -> None:
        if self._request.output == "table" and entries:
            self._start_table(entries)
        self._write(entries)

    def live(self, follower: _Follower) -> None:
        try:
            for entries in follower.batches():
                self._live_batch(entries)
        except KeyboardInterrupt:
            logger.debug("stopped following")
        self._live_batch(follower.flush())

    def _live_batch(self, entries: list[TimelineEntry]) -> None:
        if self._request.output == "table" and self._table is None and entries:
            self._start_table(entries)
        self._write(entries)

    def _start_table(self, entries: list[TimelineEntry]) -> None:
        width = max(24, *(len(source(entry)) for entry in entries))
        self._table = TableWriter(origin_ms=entries[0].at_ms, source_width=width)
        started = format_time(entries[0].at_ms)
        self._out.write(
            f"conversation {self._request.conversation_id}, "
            f"from {started[:10]} {started[11:23]} UTC\n{self._table.header()}\n"
        )

    def _write(self, entries: list[TimelineEntry]) -> None:
        for entry in entries:
            if self._table is not None:
                self._out.write(self._table.line(entry) + "\n")
            else:
                self._out.write(entry_json(entry) + "\n")
        self._out.flush()


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM stops a replay as Ctrl-C does (only the main thread can install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
