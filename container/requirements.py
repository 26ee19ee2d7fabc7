"""Print pinned requirement lines for an image build, one per line, for ``pip install -r``.

The images install exactly what ``make install`` does: the run-time dependencies that
pyproject.toml names (not its test extras), each at the version constraints.txt pins. Deriving
the list here keeps those two files the only place where dependencies are written down.

    python3 container/requirements.py                  # pyproject's dependencies, pinned
    python3 container/requirements.py --without mxnet  # the same less mxnet (the GPU image brings its own)
    python3 container/requirements.py --only gluoncv   # one pinned line (installed with --no-deps)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--without", action="append", default=[], help="leave this dependency out")
    parser.add_argument("--only", help="print only this package's pinned line")
    args = parser.parse_args()
    pinned = pins(ROOT / "constraints.txt")
    if args.only:
        names = [args.only]
    else:
        dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        skip = {normalize(name) for name in args.without}
        names = [re.match(r"[A-Za-z0-9._-]+", spec).group() for spec in dependencies]
        names = [name for name in names if normalize(name) not in skip]
    missing = [name for name in names if normalize(name) not in pinned]
    if missing:
        raise SystemExit(f"constraints.txt pins no version of {', '.join(missing)}")
    print("\n".join(pinned[normalize(name)] for name in names))


if __name__ == "__main__":
    main()
