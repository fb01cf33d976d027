"""Which Azurite the storage node starts: the project's bundle with its code cache when
`make install` made it, else Azurite's own command; CLOUDHPC_AZURITE names another."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudhpc.storage import azurite


def test_the_bundle_is_started_with_its_loader_when_it_is_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "azurite-blob.js"
    bundle.write_text("// bundle\n")
    monkeypatch.setattr(azurite, "BUNDLE", bundle)
    monkeypatch.delenv("CLOUDHPC_AZURITE", raising=False)
    argv = azurite.azurite_command()
    assert argv[0].endswith("/node") and argv[1:] == [str(azurite.START), str(bundle)]
    assert azurite.START.is_file()


def test_without_the_bundle_or_with_another_azurite_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(azurite, "BUNDLE", tmp_path / "missing.js")
    monkeypatch.delenv("CLOUDHPC_AZURITE", raising=False)
    assert azurite.azurite_command() == [azurite.azurite_bin()]
    other = tmp_path / "my-azurite"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    monkeypatch.setattr(azurite, "BUNDLE", tmp_path)  # there, but another is named
    monkeypatch.setenv("CLOUDHPC_AZURITE", str(other))
    assert azurite.azurite_command() == [str(other)]
