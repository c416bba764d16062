"""Print Twisted's newest pre-release on the package index if it is newer than its newest release; else nothing.

Used by ``make test-prerelease``.  Exits 0 with nothing printed when there
is no such pre-release, and 0 with a warning on standard error when the
index cannot be asked (no network): the pre-release run is a forewarning,
not a gate on what cannot be reached.
"""

from __future__ import annotations

import re
import subprocess
import sys

from packaging.version import InvalidVersion, Version


def newerPreRelease(available: list[str]) -> str | None:
    """The newest pre-release among ``available`` if it is newer than every release in it."""
    versions = []
    for text in available:
        try:
            versions.append(Version(text))
        except InvalidVersion:
            continue
    releases = [v for v in versions if not v.is_prerelease]
    previews = [v for v in versions if v.is_prerelease]
    if not previews:
        return None
    newest = max(previews)
    if releases and newest <= max(releases):
        return None
    return str(newest)


def main() -> int:
    asked = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "--pre", "twisted", "--disable-pip-version-check"],
        capture_output=True, text=True, timeout=120,
    )
    found = re.search(r"^Available versions: (.+)$", asked.stdout, re.MULTILINE)
    if asked.returncode != 0 or not found:
        sys.stderr.write(f"test-prerelease: cannot ask the package index: {asked.stderr.strip()[-200:]}\n")
        return 0
    pre = newerPreRelease([v.strip() for v in found.group(1).split(",")])
    if pre:
        print(pre)
    return 0


if __name__ == "__main__":
    sys.exit(main())
