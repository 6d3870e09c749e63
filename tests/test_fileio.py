import os

import pytest

from nada_core.fileio import atomic_path


def test_atomic_path_replaces_only_on_success_with_usual_mode(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_exchange_swaps_two_directories_in_one_step_and_names_a_missing_one(tmp_path):
    from nada_core.fileio import exchange

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("from a")
    (tmp_path / "b" / "y").write_text("from b")
    assert exchange(tmp_path / "a", tmp_path / "b")  # Linux on a local file system: the exchange is there
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["y"] and [
        p.name for p in (tmp_path / "b").iterdir()
    ] == ["x"]
    with pytest.raises(FileNotFoundError, match="No such file or directory: '.*/a' -> '.*/missing'"):
        exchange(tmp_path / "a", tmp_path / "missing")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["y"]
