"""The data directory is private, made on demand, and refused in one line when unusable."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from core.data_dir import DataDirError, prepare_data_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_missing_data_dir_is_made_private_with_its_parents(tmp_path: Path) -> None:
    made = prepare_data_dir(tmp_path / "a" / "b")

    assert made == (tmp_path / "a" / "b").resolve()
    assert mode(made) == 0o700


def test_a_folder_holding_our_state_is_tightened(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    tmp_path.chmod(0o755)

    prepare_data_dir(tmp_path)

    assert mode(tmp_path) == 0o700


def test_someone_elses_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)

    prepare_data_dir(shared)

    assert mode(shared) == 0o755


def test_a_path_under_a_file_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")

    with pytest.raises(DataDirError, match=r"cannot use data dir .*/file/data: Not a directory"):
        prepare_data_dir(tmp_path / "file" / "data")
