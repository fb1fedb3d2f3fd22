"""requirements/: the image's pins cover pyproject.toml, each with hashes.

A dependency added to pyproject.toml without `bash requirements/lock.sh` fails here
(and the image's `pip check` fails its build); so does a pin that no longer satisfies
the range pyproject.toml asks for.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
UPDATE = "run `bash requirements/lock.sh` and commit requirements/"


def pins(name: str) -> dict[str, tuple[Version, str | None, int]]:
    """{package: (version, marker, number of hashes)} of requirements/<name>.txt."""
    found: dict[str, tuple[Version, str | None, int]] = {}
    current = ""
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            found[current] = (Version(match.group(2)), match.group(3), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, marker, hashes = found[current]
            found[current] = (version, marker, hashes + 1)
        elif line.strip() and not line.lstrip().startswith("#"):
            pytest.fail(f"requirements/{name}: unexpected line {line!r}")
    return found


@pytest.mark.parametrize(
    ("name", "wanted"),
    [
        ("runtime.txt", PYPROJECT["project"]["dependencies"]),
        ("build.txt", PYPROJECT["build-system"]["requires"]),
    ],
)
def test_every_requirement_is_pinned_within_its_range(name, wanted):
    pinned = pins(name)
    for text in wanted:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        key = canonicalize_name(requirement.name)
        assert key in pinned, f"{requirement.name} is not pinned in requirements/{name}: {UPDATE}"
        version = pinned[key][0]
        wanted_range = requirement.specifier
        assert wanted_range.contains(version, prereleases=True), (
            f"requirements/{name} pins {requirement.name}=={version}, outside {wanted_range}: {UPDATE}"
        )


@pytest.mark.parametrize("name", ["runtime.txt", "build.txt"])
def test_every_pin_has_hashes_and_valid_markers(name):
    pinned = pins(name)
    assert pinned
    for package, (_, marker, hashes) in pinned.items():
        assert hashes >= 1, f"{package} has no --hash: pip install --require-hashes would refuse it"
        if marker:
            Marker(marker)  # parses


def test_runtime_pins_are_the_runtime_dependencies_only():
    """What runtime.txt has straight from authproxy (its `# via authproxy` lines) is
    [project] dependencies, nothing of the extras: tests and tools stay out of the image."""
    direct, current = set(), ""
    for line in (ROOT / "requirements" / "runtime.txt").read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
        elif re.match(r"^\s*#\s+(via\s+)?authproxy \(pyproject\.toml\)", line):
            direct.add(current)
    dependencies = PYPROJECT["project"]["dependencies"]
    assert direct == {canonicalize_name(Requirement(text).name) for text in dependencies}, UPDATE
