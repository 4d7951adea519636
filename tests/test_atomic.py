"""nas.atomic: files and folders appear whole or not at all, and nothing else in nas/ or
scripts/ renames files."""

import ast
import os
from pathlib import Path

import pytest

from nas.atomic import atomic_folder, atomic_path, atomic_write

ROOT = Path(__file__).resolve().parents[1]


def renames(tree: ast.AST) -> list[int]:
    """The lines that rename a file: os.replace / os.rename / os.renames, shutil.move, a
    `.rename(...)`, and `Path.replace(target)` (one argument; str.replace takes two)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        name = node.func.attr
        if (
            (owner == "os" and name in ("replace", "rename", "renames"))
            or (owner == "shutil" and name == "move")
            or name == "rename"
            or (name == "replace" and len(node.args) == 1 and not node.keywords)
        ):
            found.append(node.lineno)
    return found


def test_the_check_finds_every_kind_of_rename():
    source = (
        "os.replace(a, b)\nos.rename(a, b)\nshutil.move(a, b)\npath.rename(b)\npartial.replace(b)\n"
        "text.replace('a', 'b')\ndataclasses.replace(x, y=1)\n"
    )
    assert renames(ast.parse(source)) == [1, 2, 3, 4, 5]


def test_only_nas_atomic_renames_files():
    files = [p for folder in ("nas", "scripts") for p in (ROOT / folder).rglob("*.py")]
    wrong = [
        f"{p.relative_to(ROOT)}:{line}"
        for p in files
        if p != ROOT / "nas" / "atomic.py"
        for line in renames(ast.parse(p.read_text()))
    ]
    assert not wrong, "rename through nas.atomic instead: " + ", ".join(wrong)


def test_write_replaces_whole_and_a_failed_one_leaves_the_old(tmp_path):
    path = tmp_path / "status.json"
    atomic_write(path, "old\n")
    atomic_write(path, b"new\n")
    assert path.read_text() == "new\n"

    def fail(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"] and path.read_text() == "new\n"


def test_path_keeps_the_previous_file_and_names_its_partial_by_process(tmp_path):
    path = tmp_path / "last.ckpt"
    with atomic_path(path) as tmp:
        assert tmp.name == f"last.ckpt.{os.getpid()}.partial" and not path.exists()
        tmp.write_text("first")
    with atomic_path(path, unique=False, previous=f"{path}.prev") as tmp:
        assert tmp.name == "last.ckpt.partial"
        tmp.write_text("second")
    assert path.read_text() == "second" and (tmp_path / "last.ckpt.prev").read_text() == "first"
    with atomic_path(path, publish=False) as tmp:  # another process writes: nothing moves here
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.ckpt.prev"]


def test_folder_is_renamed_into_place_or_replaces_only_its_own_files(tmp_path):
    out = tmp_path / "export"
    with atomic_folder(out, owned=("a", "b")) as staging:
        assert staging.name == ".export.partial" and not out.exists()
        (staging / "a").write_text("1")
        (staging / "b").write_text("1")
    (out / "notes.txt").write_text("mine")
    with atomic_folder(out, owned=("a", "b")) as staging:
        (staging / "a").write_text("2")  # no b this time: the old one goes
    assert sorted(p.name for p in out.iterdir()) == ["a", "notes.txt"] and (out / "a").read_text() == "2"
    with pytest.raises(RuntimeError):
        with atomic_folder(out, owned=("a", "b")) as staging:
            (staging / "a").write_text("3")
            raise RuntimeError("killed")
    assert (out / "a").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["export"]
