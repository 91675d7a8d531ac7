"""The codebase's own rules: imports flow one way (docs/design.md §6), lint, format, types."""

from __future__ import annotations

import ast
import re
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "bookstream_core": ROOT / "services/core/bookstream_core",
    "bookstream_lending": ROOT / "services/lending/bookstream_lending",
    "bookstream_shelving": ROOT / "services/shelving/bookstream_shelving",
    "bookstream": ROOT / "cli/bookstream",
    "bookstream_operator": ROOT / "operator/bookstream_operator",
}
# What each package may import of the others.
ALLOWED = {
    "bookstream_core": set(),
    "bookstream_lending": {"bookstream_core"},
    "bookstream_shelving": {"bookstream_core"},
    "bookstream_operator": {"bookstream_core"},
    "bookstream": {"bookstream_core", "bookstream_lending", "bookstream_shelving"},
}
MAX_MODULE_LINES = 400
# Over the limit in files being rewritten by their owner now (reported); each must still be
# over, so that splitting one makes this list shrink.
KNOWN_LONG: set[str] = set()


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_flow_one_way(package: str) -> None:
    for path in PACKAGES[package].rglob("*.py"):
        wrong = imported_packages(path) - ALLOWED[package] - {package}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_service_code_is_started_only_by_the_local_runners() -> None:
    """The CLI reads the services' key layouts; only serve/demo/bench start their code."""
    starters = {"local.py", "demo.py"}
    for path in PACKAGES["bookstream"].rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in (
                "bookstream_lending.service",
                "bookstream_shelving.service",
            ):
                assert path.name in starters, f"{path.relative_to(ROOT)} imports {node.module}"


def test_the_cli_reads_no_service_keys() -> None:
    """Services own their keys: the CLI reads their state through their views only."""
    private = {"bookstream_lending.keys", "bookstream_shelving.keys"}
    for path in PACKAGES["bookstream"].rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            wrong = private & set(names)
            assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_modules_stay_small() -> None:
    long = set()
    for root in PACKAGES.values():
        for path in [*root.rglob("*.py"), *root.rglob("*.lua")]:
            lines = len(path.read_text().splitlines())
            if lines > MAX_MODULE_LINES:
                long.add(str(path.relative_to(ROOT)))
                assert str(path.relative_to(ROOT)) in KNOWN_LONG, f"{path} has {lines} lines"
    assert long >= KNOWN_LONG, f"now short enough, drop from KNOWN_LONG: {KNOWN_LONG - long}"


# --------------------------------------------------------------------------- references

TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".txt", ".lua", ".yaml", ".yml", ".mk", ".tpl"}
# A path with a folder and a known suffix, or any Markdown file name; not part of a URL,
# an absolute path, a glob or a template.
FILE_REFERENCE = re.compile(
    r"(?<![\w/.:$~{<*-])((?:\.\.?/)?(?:[A-Za-z0-9_][\w.-]*/)+[\w.-]+"
    r"\.(?:md|py|sh|lua|toml|txt|json|ya?ml|mk|tpl|png)|[A-Za-z0-9_][\w.-]*\.md)(?![\w/])"
)
# Where a reference may be relative to, besides the referring file's own folder.
REFERENCE_BASES = [
    ROOT,
    *PACKAGES.values(),
    *(p.parent for p in PACKAGES.values()),
    ROOT / "benchmarks",
    ROOT / "deploy" / "helm",
    ROOT / "deploy" / "helm" / "bookstream",
    Path(sysconfig.get_paths()["purelib"]),  # a dependency's own file (kopf/...)
]
# Stale references in files other engineers own (reported to them); each must still be
# missing, so that fixing one makes this list shrink.
KNOWN_STALE = {
    ("deploy/k8s/generate.py", "bookstream/templates/x.yaml"),  # an example of a pattern
}


def _tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def _missing_references() -> set[tuple[str, str]]:
    missing = set()
    files = _tracked_files()
    names = {path.name for path in files}  # a bare file name is a mention, not a path
    for path in files:
        if path.suffix not in TEXT_SUFFIXES and path.name not in ("Makefile", "run"):
            continue
        if path == Path(__file__).resolve():
            continue  # names missing files on purpose
        for match in FILE_REFERENCE.finditer(path.read_text(errors="replace")):
            ref = match.group(1)
            if "/" not in ref and ref in names:
                continue
            if not any((base / ref).exists() for base in [path.parent, *REFERENCE_BASES]):
                missing.add((str(path.relative_to(ROOT)), ref))
    return missing


def test_no_reference_to_a_file_that_does_not_exist() -> None:
    missing = _missing_references()
    assert not missing - KNOWN_STALE, (
        f"references to missing files: {sorted(missing - KNOWN_STALE)}"
    )
    assert missing >= KNOWN_STALE, f"fixed, drop from KNOWN_STALE: {sorted(KNOWN_STALE - missing)}"


def test_the_reference_check_catches_a_missing_file(tmp_path: Path) -> None:
    text = "see docs/nothing-here.md and cli/bookstream/cli.py"
    refs = {m.group(1) for m in FILE_REFERENCE.finditer(text)}
    assert refs == {"docs/nothing-here.md", "cli/bookstream/cli.py"}
    assert (
        not (ROOT / "docs/nothing-here.md").exists() and (ROOT / "cli/bookstream/cli.py").exists()
    )


# --------------------------------------------------------------------------- unused code

# Called by name from outside Python's sight: entry points, argparse/kopf/asyncio hooks,
# redis-py (a credential provider's get_credentials_async).
CALLED_FROM_OUTSIDE = {"main", "error", "get_credentials_async"}
# Dead code in modules other engineers are rewriting now (reported to them); each must
# still be unused, so that removing one makes this list shrink.
KNOWN_UNUSED: set[str] = set()


def _definitions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        # Other decorators register the function (kopf, pytest, click...): it is used.
        and all(_plain(d) for d in node.decorator_list)
        and not (node.name.startswith("__") and node.name.endswith("__"))
        and node.name not in CALLED_FROM_OUTSIDE
    ]


def _plain(decorator: ast.expr) -> bool:
    """A decorator that leaves the function to be called by name."""
    name = decorator.id if isinstance(decorator, ast.Name) else None
    return name in ("property", "staticmethod", "classmethod")


def _uses(tree: ast.AST) -> set[str]:
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            used.update(re.findall(r"[A-Za-z_]\w*", node.value))  # getattr, entry points
    return used


def unused_functions(sources: dict[Path, str]) -> list[str]:
    trees = {path: ast.parse(text, str(path)) for path, text in sources.items()}
    used = set().union(*(_uses(tree) for tree in trees.values()))
    return sorted(
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {node.name}"
        for path, tree in trees.items()
        for node in _definitions(tree)
        if node.name not in used
    )


def test_no_function_is_defined_and_never_used() -> None:
    """Every function of the packages is called somewhere: the packages, the tests, the
    benchmarks, or the pyproject entry points (read as text)."""
    paths = [p for root in PACKAGES.values() for p in root.rglob("*.py")]
    paths += [*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    # Not this file: it names the known dead functions in strings.
    sources = {p: p.read_text() for p in paths if p != Path(__file__).resolve()}
    for pyproject in ROOT.rglob("pyproject.toml"):
        if ".venv" not in pyproject.parts:
            sources[pyproject] = f"ENTRY_POINTS = {pyproject.read_text()!r}"
    unused = {u for u in unused_functions(sources) if not u.startswith(("tests/", "benchmarks/"))}
    assert not unused - KNOWN_UNUSED, f"defined and never used: {sorted(unused - KNOWN_UNUSED)}"
    assert unused >= KNOWN_UNUSED, f"gone, drop from KNOWN_UNUSED: {KNOWN_UNUSED - unused}"


def test_the_unused_check_catches_a_dead_function(tmp_path: Path) -> None:
    live, dead = tmp_path / "live.py", tmp_path / "dead.py"
    sources = {
        live: "def used(): pass\nused()\n",
        dead: "def forgotten(): pass\nclass K:\n    @property\n    def stale(self): pass\n",
    }
    assert unused_functions(sources) == [f"{dead}: forgotten", f"{dead}: stale"]


_LUA_DEFINITION = re.compile(r"\blocal function (\w+)")
_LUA_REGISTERED = re.compile(r"register_function\W+(?:function_name\s*=\s*)?'(bs1_\w+)'")


def unused_lua(libraries: dict[str, str], python: str) -> list[str]:
    """Lua functions never called: a local function that no library defining it uses (the
    prelude is in every library: used by one is enough), and a registered ``bs1_``
    function that no Python code names (FCALL takes it by name). ``libraries``: each
    library's source as Redis gets it."""
    uses: dict[str, bool] = {}
    for source in libraries.values():
        for function in _LUA_DEFINITION.findall(source):
            used = re.search(rf"(?<!local function )\b{function}\b", source) is not None
            uses[function] = uses.get(function, False) or used
    unused = [f"local function {name}" for name, used in uses.items() if not used]
    for library, source in libraries.items():
        unused += [f"{library}: {f}" for f in _LUA_REGISTERED.findall(source) if f not in python]
    return sorted(unused)


def test_no_lua_function_is_defined_and_never_called() -> None:
    from bookstream_core.functions import CoreFunctions
    from bookstream_lending.functions import SOURCE as LENDING
    from bookstream_shelving.functions import SOURCE as SHELVING

    libraries = {"core": CoreFunctions.source, "lending": LENDING, "shelving": SHELVING}
    python = "\n".join(p.read_text() for root in PACKAGES.values() for p in root.rglob("*.py"))
    assert unused_lua(libraries, python) == []


def test_the_lua_check_catches_a_dead_function() -> None:
    lua = (
        "local function used() end\nlocal function forgotten() end\nused()\n"
        "redis.register_function('bs1_called', used)\n"
        "redis.register_function{function_name = 'bs1_nobody', callback = used}\n"
    )
    found = unused_lua({"x": lua}, "fcall('bs1_called')")
    assert found == ["local function forgotten", "x: bs1_nobody"]


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / ".venv/bin" / args[0]), *args[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_ruff_lint_and_format() -> None:
    lint = _tool("ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout
    fmt = _tool("ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout


def test_mypy_strict() -> None:
    result = _tool("mypy", *(str(p.relative_to(ROOT)) for p in PACKAGES.values()))
    assert result.returncode == 0, result.stdout
