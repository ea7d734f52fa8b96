"""The page's transport (gateway/static/connection.js) in a real Chromium: acks and resends.

The stand-in gateway of test_page.py plays the server and acks (or does not) as each test
directs; its fixtures (`browser`, `stand_in`) come through conftest.py.
"""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.gateway.test_page import (
    CUSTOMER_TAG,
    FRAME_BYTES,
    REP_TAG,
    SOCKET_SPY,
    Chromium,
    StandInConnection,
    StandInGateway,
    new_page,
    open_live,
    settle,
    voice_frames,
)

PCM_FRAME_BYTES = FRAME_BYTES - 1  # a voice's frame without its tag byte


def typed_chunks(session: StandInConnection) -> list[dict[str, Any]]:
    return [m for m in session.messages if m.get("type") == "transcript_chunk"]


async def type_line(page: Any, text: str) -> None:
    await page.get_by_test_id("text-input").fill(text)
    await page.get_by_test_id("text-input").press("Enter")


async def test_unacked_messages_are_resent_after_a_reconnect_with_their_seq(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        await type_line(page, "First line.")
        await type_line(page, "Second line.")
        await session.wait_until(lambda: len(typed_chunks(session)) == 2, "two typed lines")
        first, second = typed_chunks(session)
        assert second["seq"] > first["seq"]
        await session.send({"type": "ack", "seq": first["seq"]})  # only the first is stored
        await settle(page, session, "acks read")

        await session.close(1001, "server going away")
        resumed = await stand_in.next_session()
        assert resumed.query == session.query  # the same client_id: the same segment ids
        await resumed.ready()
        await resumed.wait_until(lambda: bool(typed_chunks(resumed)), "the resent line")
        assert typed_chunks(resumed) == [second]  # the unacked one, unchanged; not the acked
        await resumed.send({"type": "ack", "seq": second["seq"]})
        await settle(page, resumed, "second ack read")

        await resumed.close(1001, "server going away")
        third = await stand_in.next_session()
        await third.ready()
        await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live")
        await type_line(page, "Third line.")
        await third.wait_until(lambda: bool(typed_chunks(third)), "the third line")
        # Everything was acked: nothing was resent before the new line.
        assert [m["text"] for m in typed_chunks(third)] == ["Third line."]


async def test_each_voices_unacked_audio_is_resent_from_its_own_offset(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        session = await open_live(page, stand_in)
        await page.get_by_test_id("start").click()
        await session.wait_until(
            lambda: all(len(voice_frames(session, tag)) >= 12 for tag in (REP_TAG, CUSTOMER_TAG)),
            "12 audio frames of each voice",
        )
        await page.get_by_test_id("stop").click()
        await expect(page.get_by_test_id("start")).to_be_enabled()
        # A line typed after the audio arrives after every frame: the socket keeps order.
        await type_line(page, "After the audio.")
        await session.wait_until(lambda: bool(typed_chunks(session)), "the line after the audio")
        # Offsets count each voice's audio bytes alone, without the tag byte.
        acked = {REP_TAG: 5, CUSTOMER_TAG: 3}  # frames stored, per voice
        for tag, frames in acked.items():
            await session.send(
                {"type": "ack", "audio_offset": frames * PCM_FRAME_BYTES, "stream": tag}
            )
        await session.send({"type": "ack", "seq": typed_chunks(session)[0]["seq"]})
        await settle(page, session, "acks read")
        # What must come again: each voice from its first unacked frame, in the order sent.
        unacked, seen = [], dict.fromkeys(acked, 0)
        for frame in session.frames:
            if seen[frame[0]] >= acked[frame[0]]:
                unacked.append(frame)
            seen[frame[0]] += 1

        await session.close(1001, "server going away")
        resumed = await stand_in.next_session()
        await resumed.ready()
        await resumed.wait_until(
            lambda: len(resumed.frames) >= len(unacked), "the unacked frames of both voices"
        )
        offsets = {
            m["stream"]: m.get("offset") for m in resumed.messages if m["type"] == "audio_config"
        }
        assert offsets == {tag: frames * PCM_FRAME_BYTES for tag, frames in acked.items()}
        assert resumed.frames == unacked  # the same bytes, in their order


async def test_a_socket_replaced_by_another_stops_and_never_retries(
    browser: Chromium, stand_in: StandInGateway
) -> None:
    async with new_page(browser) as page:
        await page.add_init_script(SOCKET_SPY)
        await page.clock.install()
        session = await open_live(page, stand_in)
        await session.close(4002, "replaced")
        status = page.get_by_test_id("status")
        await expect(status).to_have_attribute("data-state", "rejected")
        await page.clock.run_for(10 * 60 * 1000)  # ten minutes: any backoff would have fired
        assert await page.evaluate("window.__sockets.length") == 1
