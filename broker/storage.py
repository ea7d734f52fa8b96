"""Small durable files: atomic JSON documents and the broker's identity (cluster id, ids)."""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)

_IDENTITY_FILE: Final = "broker.json"
_LOCK_FILE: Final = ".lock"
_PRODUCER_ID_BLOCK: Final = 1000


class DataDirInUseError(RuntimeError):
    """Another broker process already serves this data directory."""


class DataDirLock:
    """An exclusive lock on a data directory, so two brokers never write the same logs.

    The OS drops the lock when the process dies, so a kill -9 leaves nothing to clean up.
    """

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / _LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUseError(
                f"{self._path.parent} is in use by another broker; stop it or pick another "
                "--data-dir"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def write_json_atomically(path: Path, document: Any) -> None:
    """Replace `path` with `document` so that a crash leaves either the old or the new file."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


class BrokerIdentity:
    """Cluster id (stable across restarts) and the producer ids handed to idempotent producers.

    Producer ids are reserved on disk a block at a time, so an id is never handed out twice,
    even across a kill -9.
    """

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / _IDENTITY_FILE
        if self._path.exists():
            document = read_json(self._path)
            self.cluster_id: str = document["cluster_id"]
            self._next_block: int = int(document["next_producer_id_block"])
        else:
            # Kafka cluster ids are 22-character url-safe base64 UUIDs.
            self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
            self._next_block = 0
        self._next_producer_id = 0
        self._block_end = 0
        self._save()

    def _save(self) -> None:
        write_json_atomically(
            self._path,
            {"cluster_id": self.cluster_id, "next_producer_id_block": self._next_block},
        )

    def new_producer_id(self) -> int:
        if self._next_producer_id >= self._block_end:
            self._next_producer_id = self._next_block * _PRODUCER_ID_BLOCK
            self._block_end = self._next_producer_id + _PRODUCER_ID_BLOCK
            self._next_block += 1
            self._save()
        producer_id = self._next_producer_id
        self._next_producer_id += 1
        return producer_id
