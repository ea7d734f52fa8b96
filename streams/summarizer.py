"""Keeps each conversation's rolling summary up to date between turns, off the suggestion path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from schemas.events import ConversationSummary
from streams.prompt import ConversationContext, Prompt, PromptBuilder

logger = logging.getLogger(__name__)

Complete = Callable[[Prompt], Awaitable[str]]
PublishSummary = Callable[[ConversationSummary], Coroutine[Any, Any, None]]


class RollingSummarizer:
    """Folds new transcript into a conversation's summary with the smaller, faster model.

    Runs once `every_lines` transcript lines have gathered since the last summary, at most one
    run per conversation and `max_concurrent` per worker; a conversation that asks while its
    summary is being written is simply asked again after the next line.
    """

    def __init__(
        self,
        *,
        builder: PromptBuilder,
        complete: Complete,
        publish: PublishSummary,
        every_lines: int = 6,
        max_concurrent: int = 2,
    ) -> None:
        self._builder = builder
        self._complete = complete
        self._publish = publish
        self._every_lines = every_lines
        self._slots = asyncio.Semaphore(max_concurrent)
        self._running: dict[str, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        """Summaries being written now."""
        return len(self._running)

    def consider(self, context: ConversationContext) -> None:
        """Start a summary of `context` if enough is new and none is running for it."""
        cid = context.conversation_id
        if cid in self._running or len(context.unsummarized) < self._every_lines:
            return
        if self._slots.locked():
            return
        request = self._builder.summary(context)
        if request is None:
            return
        turn_count = context.summary_turns + request.utterances
        task = asyncio.get_running_loop().create_task(
            self._summarize(cid, request.prompt, request.covers_until_ms, turn_count),
            name=f"summarize-{cid}",
        )
        self._running[cid] = task

    def forget(self, conversation_id: str) -> None:
        task = self._running.pop(conversation_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._running.values())
        self._running.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _summarize(
        self, conversation_id: str, prompt: Prompt, covers_until_ms: int, turn_count: int
    ) -> None:
        try:
            async with self._slots:
                summary = (await self._complete(prompt)).strip()
            if summary:
                await self._publish(
                    ConversationSummary(
                        conversation_id=conversation_id,
                        summary=summary,
                        covers_until_ms=covers_until_ms,
                        turn_count=turn_count,
                    )
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The next line asks again; a missing summary only makes prompts less informed.
            logger.warning("summarizing %s failed: %s", conversation_id, exc)
        finally:
            self._running.pop(conversation_id, None)
