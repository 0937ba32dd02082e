"""tools/mpunix.compile_mpy: one build folder per version of the sources, so checkouts and runs
that share build/ never load each other's firmware (real mpy-cross)."""

from pathlib import Path

from tools import mpunix


def _tree(folder: Path, files: dict[str, str]) -> list[tuple[Path, Path]]:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return mpunix.tree(folder)


def test_each_version_of_the_sources_gets_its_own_build(tmp_path: Path) -> None:
    """Two trees with the same module names and other contents build to two folders, each with
    only its own modules; building one again reuses its folder untouched."""
    out = tmp_path / "cache"
    one = _tree(tmp_path / "one", {"node/a.py": "X = 1\n", "node/b.py": "Y = 2\n"})
    two = _tree(tmp_path / "two", {"node/a.py": "X = 3\n"})
    first, second = mpunix.compile_mpy(one, out), mpunix.compile_mpy(two, out)
    assert first != second and first.parent == second.parent == out
    assert sorted(p.relative_to(first).as_posix() for p in first.rglob("*.mpy")) == [
        "node/a.mpy",
        "node/b.mpy",
    ]
    assert [p.relative_to(second).as_posix() for p in second.rglob("*.mpy")] == ["node/a.mpy"]
    assert (first / "node/a.mpy").read_bytes() != (second / "node/a.mpy").read_bytes()
    built = (first / "node/a.mpy").stat().st_mtime_ns
    assert mpunix.compile_mpy(one, out) == first
    assert (first / "node/a.mpy").stat().st_mtime_ns == built  # not compiled again
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left


def test_old_builds_are_pruned(tmp_path: Path) -> None:
    """Only the most recently used builds are kept."""
    out = tmp_path / "cache"
    builds = [
        mpunix.compile_mpy(_tree(tmp_path / str(i), {"m.py": f"X = {i}\n"}), out, keep=2)
        for i in range(3)
    ]
    assert sorted(out.iterdir()) == sorted(builds[1:])
