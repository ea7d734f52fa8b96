"""`teleprompter bench`: latency and load benchmark, with the LLM floor measured in the same run.

schedule  - the open-loop script: who says what, when (human pacing, realistic pauses)
driver    - WebSocket clients acting as reps' screens, timing every turn
baseline  - the same prompts sent straight to the LLM endpoint: the floor
processes - CPU seconds and peak memory of every process of the system
report    - percentiles, the typed report, its table and JSON
run       - puts them together (and starts the system when no --url is given)
plot      - p50/p99 against concurrent sessions from several JSON reports
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)
