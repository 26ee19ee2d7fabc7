"""The README and docs/ against themselves and against the code they restate.

Every link between them resolves (file and anchor, by GitHub's anchor rules), and each table that
restates code (content types, routes, the module layout) says what the code does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from semseg.inference import codecs
from semseg.logs import METRIC_REGEXES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _prose(text: str) -> str:
    """``text`` without its fenced code blocks (a ``# comment`` there is no heading)."""
    return FENCE.sub("", text)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped (``-`` and ``_`` kept), spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of ``page``; a repeated heading gets ``-1``, ``-2``... as on GitHub."""
    found: dict[str, int] = {}
    result = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(page.read_text()), re.MULTILINE):
        base = anchor(heading)
        count = found.get(base, 0)
        found[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def section(page: Path, heading: str) -> str:
    """The text under ``heading`` (a whole heading line, any level) up to the next heading."""
    lines, in_fence = None, False
    for line in page.read_text().split("\n"):
        in_fence = in_fence != line.startswith("```")
        is_heading = not in_fence and re.match(r"#{1,6} ", line)
        if lines is None:
            if is_heading and line.split(" ", 1)[1] == heading:
                lines = []
        elif is_heading:
            break
        else:
            lines.append(line)
    assert lines is not None, f"{page.name} has no heading {heading!r}"
    return "\n".join(lines)


def table_rows(text: str) -> list[list[str]]:
    """The cells of each body row of the Markdown tables in ``text`` (header and rule left out)."""
    rows = []
    for block in re.findall(r"(?:^\|.*\|\n?)+", text, re.MULTILINE):
        for line in block.strip().split("\n")[2:]:
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def test_the_docs_exist():
    names = {page.name for page in DOCS.glob("*.md")}
    assert {"training.md", "serving.md", "images.md", "jobs.md", "development.md", "performance.md"} <= names


def test_every_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(_prose(page.read_text())):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif fragment and (linked.suffix != ".md" or fragment not in anchors(linked)):
                broken.append(f"{page.name}: {target} (no such anchor)")
    assert not broken, "\n".join(broken)


def test_the_readme_links_to_every_doc():
    readme = (ROOT / "README.md").read_text()
    for page in DOCS.glob("*.md"):
        assert f"](docs/{page.name})" in readme, page.name


def test_the_readme_starts_with_the_two_setup_commands():
    lines = (ROOT / "README.md").read_text().split("\n")
    assert lines[2] == "```bash" and lines[3].startswith("make demo ") and lines[5].startswith("make test ")
    assert len(lines) <= 251  # 250 lines and the final newline


def test_the_content_types_are_those_of_the_codecs():
    serving = section(DOCS / "serving.md", "Serving")
    sentence = re.search(r"Request `Content-Type`.*?\(or none\)", serving, re.DOTALL)
    assert sentence, "serving.md states no request Content-Type"
    stated = re.findall(r"`([a-z]+/[\w.+-]+)`", sentence.group(0))
    assert stated == codecs.REQUEST_TYPES
    answers = {}
    for cells in table_rows(serving):
        if len(cells) == 3 and cells[0].startswith("`") and "/" in cells[0]:
            for media in re.findall(r"`([a-z]+/[\w.+-]+)`", cells[0]):
                answers[media] = cells[2].strip("`")
    assert list(answers) == codecs.RESPONSE_TYPES
    for media, extension in answers.items():
        assert codecs.CONTENT_TYPES[media].extension == extension, media


def test_the_routes_table_is_the_apps():
    from semseg.inference.settings import ServingSettings
    from serve.app import create_app

    app = create_app(ServingSettings())
    served = {
        (method, re.sub(r"<[^>]+>", "<>", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    stated = set()
    for cells in table_rows(section(DOCS / "serving.md", "Serving")):
        route = re.fullmatch(r"`(GET|POST|PUT|DELETE) (/\S*)`", cells[0])
        if route:
            stated.add((route.group(1), re.sub(r"<[^>]+>", "<>", route.group(2))))
    assert stated == served


def test_the_metric_definitions_are_the_ones_the_code_matches():
    readme = (ROOT / "README.md").read_text()
    rows = {
        cells[0].strip("`"): cells[1][1:-1] for cells in table_rows(section(ROOT / "README.md", "MetricDefinitions"))
    }
    assert rows == METRIC_REGEXES
    assert "](../README.md#metricdefinitions)" in (DOCS / "training.md").read_text() and readme


def _layout() -> dict[str, list[str]]:
    """development.md's layout table: each package (a folder of the repository) and the files it names."""
    table = section(DOCS / "development.md", "Layout")
    layout = {}
    for cells in table_rows(table):
        package = re.fullmatch(r"`([\w/]+/)`", cells[0])
        assert package, cells[0]
        layout[package.group(1)] = re.findall(r"`([\w.]+\.(?:py|html|proto))`", cells[1])
    return layout


def test_every_module_the_layout_names_exists():
    missing = [
        package + name
        for package, names in _layout().items()
        for name in names
        if not (ROOT / package / name).is_file()
    ]
    assert not missing


def test_every_package_is_in_the_layout():
    packages = {
        f"{init.parent.relative_to(ROOT).as_posix()}/" for init in (ROOT / "src" / "semseg").rglob("__init__.py")
    }
    assert packages <= set(_layout())


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_heading_is_repeated_within_a_page(page):
    headings = re.findall(r"^#{1,6} (.+)$", _prose(page.read_text()), re.MULTILINE)
    repeated = {anchor(h) for h in headings if [anchor(x) for x in headings].count(anchor(h)) > 1}
    assert not repeated
