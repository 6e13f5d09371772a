"""path_map: the daemon's paths rewritten by prefix for workers that mount the volume elsewhere."""

from __future__ import annotations

import pytest

from daemon.jobs.pathmap import PathMap, PathMapError


def test_longest_prefix_wins_at_path_component_boundaries():
    pm = PathMap.parse({"/Volumes/lab": "/mnt/lab", "/Volumes/lab/clinic": "/srv/clinic/"})
    assert pm.apply("/Volumes/lab/a/b.mp4") == "/mnt/lab/a/b.mp4"
    assert pm.apply("/Volumes/lab/clinic/x.mov") == "/srv/clinic/x.mov"
    assert pm.apply("/Volumes/lab") == "/mnt/lab"
    assert pm.apply("/Volumes/lab2/x.mp4") is None  # not a component boundary
    assert pm.apply("/Users/me/x.mp4") is None


def test_trailing_slashes_and_the_root_prefix():
    assert PathMap.parse({"/Volumes/lab/": "/mnt/lab/"}).apply("/Volumes/lab/x.mp4") == "/mnt/lab/x.mp4"
    assert PathMap.parse({"/": "/mnt/mac"}).apply("/Users/me/x.mp4") == "/mnt/mac/Users/me/x.mp4"


def test_candidates_try_the_mapped_path_then_the_given_one(tmp_path):
    mounted = tmp_path / "mnt"
    (mounted / "lab").mkdir(parents=True)
    (mounted / "lab" / "x.mp4").write_bytes(b"")
    (tmp_path / "here.mp4").write_bytes(b"")
    pm = PathMap.parse({"/Volumes/lab": str(mounted / "lab"), str(tmp_path / "elsewhere"): "/nowhere"})
    assert pm.candidates("/Volumes/lab/x.mp4") == [str(mounted / "lab" / "x.mp4"), "/Volumes/lab/x.mp4"]
    assert pm.locate("/Volumes/lab/x.mp4") == str(mounted / "lab" / "x.mp4")
    assert pm.locate(str(tmp_path / "here.mp4")) == str(tmp_path / "here.mp4")  # unmapped: as given
    assert pm.locate("/Volumes/lab/missing.mp4") is None
    # mapped to where it is not, but there as given (a Mac worker in a map written for Linux boxes)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "y.mp4").write_bytes(b"")
    assert pm.locate(str(tmp_path / "elsewhere" / "y.mp4")) == str(tmp_path / "elsewhere" / "y.mp4")


@pytest.mark.parametrize("mapping,named", [
    ({"Volumes/lab": "/mnt/lab"}, "'Volumes/lab'"),
    ({"/Volumes/lab": "mnt/lab"}, "'mnt/lab'"),
    ({"/Volumes/lab": 3}, "both sides must be strings"),
])
def test_bad_entries_are_named(mapping, named):
    with pytest.raises(PathMapError) as raised:
        PathMap.parse(mapping, source="config.toml: path_map")
    assert "config.toml: path_map" in str(raised.value) and named in str(raised.value)


def test_empty_map_changes_nothing():
    pm = PathMap.parse(None)
    assert pm.apply("/a/b") is None and pm.candidates("/a/b") == ["/a/b"]
