"""The seams of ARCHITECTURE.md, checked on the source: no import cycle (imports inside
functions and under TYPE_CHECKING count), external commands only through the runner (and the
node supervisor), the facade, lifecycle and control plane typed against the provider
interface, event kinds from one enum that the README lists, daemons that log."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "cloudhpc"
README = Path(__file__).resolve().parents[2] / "README.md"


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = ["cloudhpc", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every cloudhpc module NAME imports, anywhere in the file."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES and m != name}


def _graph() -> dict[str, set[str]]:
    return {name: _imports(name, path) for name, path in MODULES.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle, or [] (depth-first search, package __init__ edges included)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_type_checking_imports_included() -> None:
    graph = _graph()
    # a package's __init__ importing its own modules is how packages export; a module
    # importing its package back is the cycle that counts
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    assert _cycle(graph) == []


def test_no_type_checking_imports() -> None:
    users = [n for n, p in MODULES.items() if "TYPE_CHECKING" in p.read_text()]
    assert users == []


def test_external_commands_only_through_the_runner() -> None:
    allowed = {"cloudhpc.runner", "cloudhpc.node.supervisor"}
    offenders = sorted(n for n, p in MODULES.items() if n not in allowed
                       and re.search(r"^\s*(import subprocess|from subprocess)|os\.system\(|"
                                     r"os\.popen\(|os\.exec", p.read_text(), re.M))
    assert offenders == []


def test_domain_does_not_import_the_web_layer() -> None:
    for name in ("cloudhpc.jobs.users", "cloudhpc.jobs.service", "cloudhpc.storage.access"):
        assert not any(m.startswith("cloudhpc.api") for m in _imports(name, MODULES[name])), name


def test_facade_lifecycle_and_control_plane_typed_against_the_interface() -> None:
    """They name the Provider/Backend protocols; only the factory names a provider class."""
    for name in ("cloudhpc.cluster", "cloudhpc.lifecycle", "cloudhpc.autoscale.control",
                 "cloudhpc.live"):
        text = MODULES[name].read_text()
        assert "LocalProvider" not in text and "AzureProvider" not in text, name
        assert re.search(r"\b(Provider|Backend)\b", text), name
        assert "hasattr(" not in text and "provider: Any" not in text, name


def _emitted_kinds() -> set[str]:
    kinds = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "emit" \
                    and node.args:
                arg = node.args[0]
                assert not isinstance(arg, ast.Constant), \
                    f"{path}: emit({arg.value!r}) with a free string; use EventKind"
                if isinstance(arg, ast.Attribute) and getattr(arg.value, "id", "") == \
                        "EventKind":
                    kinds.add(arg.attr)
    return kinds


def test_every_emitted_kind_is_an_event_kind() -> None:
    from cloudhpc.events import EventKind

    emitted = _emitted_kinds()
    assert emitted and emitted <= set(EventKind.__members__)


def test_the_readme_lists_exactly_the_event_kinds() -> None:
    from cloudhpc.events import EventKind

    text = README.read_text()
    section = text.split("### Event kinds", 1)[1].split("\n#", 1)[0]
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    assert listed == {k.value for k in EventKind}


def test_daemons_log_instead_of_printing() -> None:
    for name in ("cloudhpc.autoscale.reconciler", "cloudhpc.autoscale.control",
                 "cloudhpc.api.server", "cloudhpc.node.supervisor"):
        text = MODULES[name].read_text()
        assert "print(" not in text and "import logging" in text, name


def test_secret_files_are_written_by_one_helper() -> None:
    pattern = re.compile(r"0o600|0o400")
    offenders = sorted(n for n, p in MODULES.items()
                       if n != "cloudhpc.secretfile" and pattern.search(p.read_text()))
    assert offenders == []


def test_no_stale_words() -> None:
    root = SRC.parents[1]
    texts = [*MODULES.values(), root / "README.md", root / "SECURITY.md"]
    stale = re.compile(r"DESIGN\.md|REST\)? later|later REST|\(not yet\)|not in this "
                       r"version yet|, later, an Azure")
    assert [str(p) for p in texts if stale.search(p.read_text())] == []


def test_long_running_processes_do_not_import_the_azure_sdk_until_they_use_it() -> None:
    """azure-storage-blob and azure-core cost 0.4 s of CPU to import: every CLI call and
    every daemon of a cluster (started together by `up`) paid it. Measured with
    `python -X importtime -c 'import cloudhpc.api.server'`: 1.11 s -> 0.71 s."""
    import subprocess
    import sys

    code = ("import sys, cloudhpc.cli.main, cloudhpc.api.server, cloudhpc.autoscale.reconciler,"
            " cloudhpc.autoscale.control, cloudhpc.node.supervisor; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'azure'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out
