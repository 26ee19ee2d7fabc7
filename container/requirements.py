"""Print pinned requirement lines for an image build, one per line, for ``pip install -r``.

The images install exactly what ``make install`` does: the run-time dependencies that
pyproject.toml names (not its test extras), each at the version constraints.txt pins. Deriving
the list here keeps those two files the only place where dependencies are written down.

    python3 container/requirements.py                  # pyproject's dependencies, pinned
    python3 container/requirements.py --without mxnet  # the same less mxnet (the GPU image brings its own)
    python3 container/requirements.py --only gluoncv   # one pinned line (installed with --no-deps)
    python3 container/requirements.py --constraints    # constraints.txt less the test-only pins

The Dockerfiles write these files in a stage of their own and copy them into the stage that
installs, so editing a test dependency in pyproject.toml or constraints.txt does not invalidate the
image's dependency layer: its cache key is the content of these lists.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pins(constraints: Path) -> dict[str, str]:
    """``{normalized name: "name==version"}`` for every pinned line of a constraints file."""
    found = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            found[normalize(line.split("==", 1)[0])] = line
    return found


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def names(specs: list[str]) -> list[str]:
    return [re.match(r"[A-Za-z0-9._-]+", spec).group() for spec in specs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--without", action="append", default=[], help="leave this dependency out")
    parser.add_argument("--only", help="print only this package's pinned line")
    parser.add_argument("--constraints", action="store_true", help="print constraints.txt less the test-only pins")
    args = parser.parse_args()
    pinned = pins(ROOT / "constraints.txt")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = names(project["dependencies"])
    if args.constraints:
        extras = {normalize(n) for specs in project.get("optional-dependencies", {}).values() for n in names(specs)}
        test_only = extras - {normalize(n) for n in runtime}
        print("\n".join(line for name, line in pinned.items() if name not in test_only))
        return
    if args.only:
        wanted = [args.only]
    else:
        skip = {normalize(name) for name in args.without}
        wanted = [name for name in runtime if normalize(name) not in skip]
    missing = [name for name in wanted if normalize(name) not in pinned]
    if missing:
        raise SystemExit(f"constraints.txt pins no version of {', '.join(missing)}")
    print("\n".join(pinned[normalize(name)] for name in wanted))


if __name__ == "__main__":
    main()
