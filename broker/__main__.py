"""`python -m broker --port 9092 --data-dir DIR`: the embedded broker alone, without settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from broker.runner import serve_until_signalled
from broker.server import EmbeddedBroker

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m broker", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--log-level", default="INFO")
    arguments = parser.parse_args()
    logging.basicConfig(
        level=arguments.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    broker = EmbeddedBroker(host=arguments.host, port=arguments.port, data_dir=arguments.data_dir)
    asyncio.run(serve_until_signalled(broker))


if __name__ == "__main__":
    main()
