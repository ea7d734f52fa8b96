"""RollingSummarizer: summarizes after enough new lines, one run per conversation, off the path."""

from __future__ import annotations

import asyncio

from schemas.events import ConversationSummary
from streams.prompt import ConversationContext, Prompt, PromptBuilder
from streams.summarizer import RollingSummarizer
from tests.waiting import wait_until


def context_with(lines: int) -> ConversationContext:
    context = ConversationContext("c1")
    for n in range(lines):
        speaker = "customer" if n % 2 == 0 else "rep"
        context.add(speaker, f"line number {n}", at_ms=1_000 + n * 10_000)
    return context


async def test_summarizes_once_enough_lines_gathered_and_publishes_the_summary() -> None:
    published: list[ConversationSummary] = []
    release = asyncio.Event()
    asked: list[Prompt] = []

    async def complete(prompt: Prompt) -> str:
        asked.append(prompt)
        await release.wait()
        return "Customer asked about lines."

    async def publish(summary: ConversationSummary) -> None:
        published.append(summary)

    summarizer = RollingSummarizer(
        builder=PromptBuilder(), complete=complete, publish=publish, every_lines=4
    )
    summarizer.consider(context_with(3))
    await asyncio.sleep(0)
    assert asked == []

    context = context_with(4)
    summarizer.consider(context)
    summarizer.consider(context)  # already running: not asked twice
    await wait_until(lambda: len(asked) == 1, what="one summary request")
    release.set()
    await wait_until(lambda: len(published) == 1, what="the summary")
    assert published[0].summary == "Customer asked about lines."
    assert published[0].covers_until_ms == context.transcript[-1].at_ms
    await summarizer.close()


async def test_a_failing_summary_is_logged_and_retried_on_the_next_line() -> None:
    calls = 0

    async def complete(prompt: Prompt) -> str:
        nonlocal calls
        calls += 1
        raise RuntimeError("endpoint down")

    async def publish(summary: ConversationSummary) -> None:
        raise AssertionError("nothing to publish")

    summarizer = RollingSummarizer(
        builder=PromptBuilder(), complete=complete, publish=publish, every_lines=2
    )
    context = context_with(2)
    summarizer.consider(context)
    await wait_until(lambda: calls == 1, what="first try")
    await wait_until(lambda: len(summarizer) == 0, what="first try to finish")
    summarizer.consider(context)
    await wait_until(lambda: calls == 2, what="second try")
    await summarizer.close()
