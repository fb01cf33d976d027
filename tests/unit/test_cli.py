"""The CLI on bad input: one clear line per problem, exit codes, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "cloudhpc.cli"]


def cli(*args: str, home: Path, user: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOUDHPC_HOME": str(home)}
    argv = [*CLI, *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def test_validate_good_template(tmp_path: Path) -> None:
    res = cli("validate", "examples/quickstart.yaml", home=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "valid" in res.stdout


def test_validate_reports_each_error_with_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "examples/quickstart.yaml").read_text()
                   .replace("min: 2", "min: 3").replace("name: hpc", "nme: hpc"))
    res = cli("validate", str(bad), home=tmp_path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "compute[0].nme: unknown key 'nme', line 9 — did you mean 'name'?" in res.stderr


def test_validate_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "examples/quickstart.yaml").read_text().replace("min: 2", "min: 3"))
    res = cli("validate", str(bad), "--json", home=tmp_path)
    assert res.returncode == 2
    data = json.loads(res.stdout)
    assert data["valid"] is False
    assert data["findings"][0]["path"] == "compute[0].max"
    assert data["findings"][0]["line"] == 12


def test_up_with_bad_template_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\ncompute: 3\n")
    res = cli("up", str(bad), home=tmp_path)
    assert res.returncode in (1, 2)
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("error:")


def test_missing_template_file(tmp_path: Path) -> None:
    res = cli("validate", "nope.yaml", home=tmp_path)
    assert res.returncode == 2
    assert res.stderr.count("\n") <= 2 and "cannot read template" in res.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another user")
def test_not_root_is_one_clear_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chown(home, 65534, 65534)
    res = cli("up", "examples/quickstart.yaml", home=home, user=65534)
    assert res.returncode == 1
    assert "needs root" in res.stderr and "Traceback" not in res.stderr


def test_schema_is_json_schema(tmp_path: Path) -> None:
    res = cli("schema", home=tmp_path)
    schema = json.loads(res.stdout)
    assert schema["title"] == "Template"
    assert "compute" in schema["properties"]


def test_no_cluster_is_one_clear_line(tmp_path: Path) -> None:
    res = cli("status", home=tmp_path)
    assert res.returncode == 1
    assert "no cluster exists" in res.stderr and "hint: create one" in res.stderr


def test_missing_program_names_package() -> None:
    from cloudhpc.errors import MissingPackageError
    from cloudhpc.runner import PACKAGES, require_programs

    PACKAGES["no-such-prog"] = "no-such-package"
    with pytest.raises(MissingPackageError) as info:
        require_programs(["sh", "no-such-prog"])
    assert "no-such-package" in str(info.value)
    assert "apt-get install -y no-such-package" in info.value.hint


def test_output_keeps_colon_separated_text_as_it_is() -> None:
    """Rich turned ":AB:" of a certificate fingerprint into an emoji (seen in CI: `token
    create` printed a fingerprint a user could not paste back)."""
    from cloudhpc.cli import output

    text = "fingerprint 3F:AB:CD:AB:01 and :smile:"
    for console in (output.out, output.err):
        with console.capture() as captured:
            console.print(text, highlight=False, soft_wrap=True)
        assert captured.get().strip() == text
