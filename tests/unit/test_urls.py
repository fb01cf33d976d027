"""blob:// addresses and staging specifications: what is accepted, what is refused and why."""

from __future__ import annotations

import pytest

from cloudhpc.storage.urls import (
    BlobURL,
    StagingError,
    parse_blob_url,
    parse_stage_in,
    parse_stage_out,
)


@pytest.mark.parametrize(("text", "container", "path"), [
    ("blob://data/a.csv", "data", "a.csv"),
    ("blob://data/dir/sub/", "data", "dir/sub"),
    ("blob://my-data", "my-data", ""),
    ("blob://abc/x:y", "abc", "x:y"),
])
def test_blob_urls_accepted(text: str, container: str, path: str) -> None:
    assert parse_blob_url(text) == BlobURL(container, path)


@pytest.mark.parametrize(("text", "words"), [
    ("data/a.csv", "does not start with blob://"),
    ("blob:/data/a.csv", "does not start with blob://"),
    ("blob://Data/a.csv", "not a valid container name"),
    ("blob://ab/a.csv", "not a valid container name"),
    ("blob://a--b/x", "not a valid container name"),
    ("blob://data/../etc", "may not hold"),
    ("blob://data/a//b", "may not hold"),
])
def test_blob_urls_refused(text: str, words: str) -> None:
    with pytest.raises(StagingError) as info:
        parse_blob_url(text)
    assert words in info.value.message
    assert info.value.hint


def test_stage_in_destination_defaults_to_blob_name() -> None:
    spec = parse_stage_in("blob://data/inputs/a.csv")
    assert (str(spec.source), spec.dest) == ("blob://data/inputs/a.csv", "a.csv")
    spec = parse_stage_in("blob://data/inputs:in/")
    assert (str(spec.source), spec.dest) == ("blob://data/inputs", "in")


@pytest.mark.parametrize(("spec", "words"), [
    ("blob://data/a.csv:../a.csv", "outside the job's directory"),
    ("blob://data/a.csv:/etc/passwd", "relative to the job's directory"),
    ("blob://data/a.csv:x/../../y", "outside the job's directory"),
    ("blob://data", "names a whole container"),
    ("s3://data/a.csv:a", "must start with blob://"),
])
def test_stage_in_refused(spec: str, words: str) -> None:
    with pytest.raises(StagingError) as info:
        parse_stage_in(spec)
    assert words in info.value.message


def test_stage_out_parsed() -> None:
    spec = parse_stage_out("out/result.txt:blob://results/run1/result.txt")
    assert spec.source == "out/result.txt"
    assert spec.dest == BlobURL("results", "run1/result.txt")


@pytest.mark.parametrize(("spec", "words"), [
    ("result.txt", "has no blob:// destination"),
    ("result.txt:blob://results", "names a whole container"),
    ("../x:blob://results/x", "outside the job's directory"),
    ("/tmp/x:blob://results/x", "relative to the job's directory"),
    ("x:blob://R/x", "not a valid container name"),
])
def test_stage_out_refused(spec: str, words: str) -> None:
    with pytest.raises(StagingError) as info:
        parse_stage_out(spec)
    assert words in info.value.message


@pytest.mark.parametrize("name", ["a\\..\\x", "d/../../x", "../x", "./x", "a//b",
                                  "x/" + "y" * 300 + "/z", "nul\0byte"])
def test_blob_names_that_cannot_be_local_paths(name: str) -> None:
    from cloudhpc.storage.urls import local_relative

    with pytest.raises(StagingError):
        local_relative(name)


def test_plain_blob_names_are_local_paths() -> None:
    from cloudhpc.storage.urls import local_relative

    assert local_relative("a/b c/d.txt") == "a/b c/d.txt"
