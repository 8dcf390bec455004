"""The repository is self-contained: no project file names a path outside it, every relative
Markdown link resolves to a file (and heading) inside it, and the product's packages never import
the tooling (devkit, benchmarks, tests, tools), which the wheel leaves out.

A clone is all a user or contributor gets, so a pointer to a machine's checkout, a sibling folder
or a scratch directory is a pointer to nothing. Files are listed with ``git ls-files`` (tracked
ones, plus untracked ones git does not ignore, so a new page is checked before its first commit).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import tomllib
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The patterns are assembled from pieces so that this file's own source never matches them: the
# test scans itself like every other file, with no exception.
_SLASH = "/"
_NOT_PATH_CHAR = r"(?<![\w.~/-])"  # an absolute path starts here, not in the middle of a word or URL


def _absolute(folder: str) -> re.Pattern[str]:
    return re.compile(_NOT_PATH_CHAR + re.escape(_SLASH + folder + _SLASH))


# Paths that point outside the repository wherever they appear.
EVERYWHERE = [
    (re.compile(r"(?:\.\.[\\/])+" + "shared" + r"\b"), "a folder beside the repository"),
    (re.compile("shared" + re.escape(_SLASH) + "design", re.IGNORECASE), "the team's design notes"),
    (_absolute("work"), "a machine's checkout"),
    (_absolute("home"), "a home directory"),
    (_absolute("Users"), "a home directory"),
]
# Scratch space: scripts and tests may use it as such (pip --target and apt lists for the GPU
# machine), and a benchmark result may record where its input lay. In documentation and configs it
# would be a project path, which is what this test is about.
SCRATCH = (_absolute("tmp"), "a scratch directory")
SCRATCH_IS_A_PROJECT_PATH = {".md", ".yaml", ".yml", ".toml", ".cfg", ".ini"}

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"""<a\s[^>]*(?:name|id)=["']([^"']+)["']""", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")


def project_files() -> list[str]:
    """Paths relative to ROOT of the tracked files and the untracked ones git does not ignore."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc})")
    names = {name for name in out.decode().split("\0") if name}
    return sorted(name for name in names if (ROOT / name).is_file())  # a deleted file is no longer there


def read_text(path: Path) -> str | None:
    """The file as UTF-8 text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def outside_paths(name: str, text: str) -> list[str]:
    """`name:line: ...` for every path outside the repository named in a file's text."""
    patterns = list(EVERYWHERE)
    if Path(name).suffix.lower() in SCRATCH_IS_A_PROJECT_PATH:
        patterns.append(SCRATCH)
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, what in patterns:
            for match in pattern.finditer(line):
                problems.append(f"{name}:{number}: names {what} ({match.group(0)!r}): {line.strip()}")
    return problems


def markdown_lines(text: str, blank_code: bool = True) -> Iterable[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code blanked out (or kept)."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)[0] * 3
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        yield number, INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line) if blank_code else line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in markdown_lines(text, blank_code=False):  # a heading's code is part of its anchor
        found.update(HTML_ANCHOR.findall(line))
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def markdown_links(text: str) -> Iterable[tuple[int, str]]:
    for number, line in markdown_lines(text):
        for match in INLINE_LINK.finditer(line):
            yield number, match.group(1)
        reference = REFERENCE_LINK.match(line)
        if reference:
            yield number, reference.group(1)


def broken_links(name: str, text: str, files: set[str], root: Path = ROOT) -> list[str]:
    """`name:line: ...` for every relative link that leaves the repository or leads nowhere."""
    folders = {parent.as_posix() for f in files for parent in Path(f).parents}
    problems = []
    for number, target in markdown_links(text):
        if SCHEME.match(target):
            continue  # a URL
        where = f"{name}:{number}: link {target!r}"
        path_part, _, fragment = target.partition("#")
        path_part = unquote(path_part)
        if path_part.startswith("/"):
            problems.append(f"{where} is an absolute path; link relative to {name}")
            continue
        if path_part:
            joined = os.path.normpath(os.path.join(os.path.dirname(name), path_part))
            relative = Path(joined).as_posix()
            if relative == ".." or relative.startswith("../"):
                problems.append(f"{where} resolves outside the repository")
                continue
            if relative not in files and relative not in folders:
                problems.append(f"{where}: no file {relative} in the repository")
                continue
        else:
            relative = name
        if fragment and relative.endswith(".md") and relative in files:
            found = anchors((root / relative).read_text(encoding="utf-8"))
            if unquote(fragment).lower() not in found:
                problems.append(f"{where}: {relative} has no heading with the anchor #{fragment}")
    return problems


def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n  " + "\n  ".join(problems)


def test_no_file_names_a_path_outside_the_repository():
    problems = []
    for name in project_files():
        text = read_text(ROOT / name)
        if text is not None:
            problems += outside_paths(name, text)
    assert not problems, _report(problems)


def test_markdown_links_resolve_inside_the_repository():
    files = set(project_files())
    pages = sorted(name for name in files if name.endswith(".md"))
    assert "README.md" in pages
    assert any(name.startswith("docs/") for name in pages), "docs/*.md are missing"
    problems = []
    for name in pages:
        problems += broken_links(name, (ROOT / name).read_text(encoding="utf-8"), files)
    assert not problems, _report(problems)


def test_readme_links_every_docs_page():
    files = project_files()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {os.path.normpath(target.partition("#")[0]) for _, target in markdown_links(readme)}
    pages = [name for name in files if name.startswith("docs/") and name.endswith(".md")]
    assert pages
    missing = [name for name in pages if name not in linked]
    assert not missing, f"README.md does not link {missing}"


# The checks themselves: each must catch what it is there for.


def test_outside_paths_are_caught():
    design = "shared" + _SLASH + "DESIGN.md"
    text = "\n".join(
        [
            "fine: runs/quickstart, ~/.cache/semore, https://example.org/work/x, a/work/b",
            "see .." + _SLASH + design,
            "open " + _SLASH + "work" + _SLASH + "main" + _SLASH + "README.md",
            "scratch " + _SLASH + "tmp" + _SLASH + "policy.onnx",
        ]
    )
    found = outside_paths("docs/page.md", text)
    assert [p.split(":")[1] for p in found] == ["2", "2", "3", "4"], found
    assert all(p.startswith("docs/page.md:") for p in found)
    # In a script the scratch directory is scratch, not a project path.
    assert [p.split(":")[1] for p in outside_paths("tools/x.sh", text)] == ["2", "2", "3"]


def test_broken_links_are_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## A section: `code`\n")
    files = {"README.md", "docs/other.md", "configs/a.yaml"}
    text = "\n".join(
        [
            "[ok](docs/other.md) [ok](docs/other.md#a-section-code) [ok](configs/) [ok](https://x.org/a)",
            "[out](.." + _SLASH + "shared" + _SLASH + "notes.md)",
            "[gone](docs/missing.md)",
            "[anchor](docs/other.md#no-such-heading)",
            "[absolute](/etc/hosts)",
            "`[not a link](nowhere.md)`",
            "```",
            "[in a code block](nowhere.md)",
            "```",
            "[ref]: docs/missing-too.md",
        ]
    )
    found = broken_links("README.md", text, files, root=tmp_path)
    assert [p.split(":")[1] for p in found] == ["2", "3", "4", "5", "10"], found


PRODUCT = ("semore_runtime", "training", "export", "serve", "evidence", "fleet")
TOOLING = ("devkit", "benchmarks", "tests", "tools")


def _imported_packages(source: str) -> set[str]:
    packages = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            packages.add(node.module.split(".")[0])
    return packages


def test_the_product_never_imports_tooling_and_the_wheel_ships_none():
    problems = []
    for name in project_files():
        top = name.split("/")[0]
        if not name.endswith(".py") or top not in (*PRODUCT, "benchmarks"):
            continue
        used = _imported_packages((ROOT / name).read_text(encoding="utf-8"))
        # A benchmark may use devkit and tools; a product module none of the tooling.
        forbidden = {"tests"} if top == "benchmarks" else set(TOOLING)
        problems += [f"{name} imports {package}" for package in sorted(used & forbidden)]
    assert not problems, "\n".join(problems)
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {pattern.rstrip("*") for pattern in shipped["include"]} == set(PRODUCT)
