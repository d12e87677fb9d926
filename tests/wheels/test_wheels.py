"""The five wheels and sdists as PyPI would get them: license, metadata, README, version.

`nox -s wheels` builds them into dist/, installs the wheels and runs this file with
``WORKFLOWS_WHEELS_DIR`` pointing there. Run alone (``pytest tests/wheels`` where
``build`` is installed), it builds them itself into a temporary folder.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LICENSE = (ROOT / "LICENSE").read_bytes()
PLACEHOLDER_REPOSITORY = "https://github.com/currant-dev/currant"
# What every package's page says of it (besides its Python versions).
REQUIRED_CLASSIFIERS = {
    "Programming Language :: Python :: 3.11",
    "Programming Language :: Python :: 3.12",
    "Programming Language :: Python :: 3.13",
    "Framework :: AsyncIO",
    "Typing :: Typed",
}
URL_LABELS = {"Homepage", "Documentation", "Source", "Changelog", "Issues"}


@dataclass(frozen=True)
class Package:
    folder: Path
    name: str  # as in pyproject.toml: workflows-core
    module: str  # its import name: workflows
    version: str

    @property
    def file_stem(self) -> str:
        """The start of its files' names: workflows_core-0.1.0 (PEP 427 and 625)."""
        return f"{re.sub(r'[-_.]+', '_', self.name).lower()}-{self.version}"


def _packages() -> list[Package]:
    found = []
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        (module,) = (p.name for p in (pyproject.parent / "src").iterdir() if p.is_dir())
        found.append(Package(pyproject.parent, project["name"], module, project["version"]))
    return found


PACKAGES = _packages()
OURS = {p.name: p for p in PACKAGES}


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("WORKFLOWS_WHEELS_DIR")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    for package in PACKAGES:
        # An sdist, then the wheel built from it, as pip builds from PyPI's sdist.
        result = subprocess.run(
            [sys.executable, "-m", "build", "--outdir", str(out), str(package.folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"building {package.name} failed (run `nox -s wheels`, which installs `build`):"
                f"\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
    return out


def _wheel(dist: Path, package: Package) -> zipfile.ZipFile:
    (path,) = dist.glob(f"{package.file_stem}-py3-none-any.whl")
    return zipfile.ZipFile(path)


def _metadata(wheel: zipfile.ZipFile, package: Package) -> Message:
    raw = wheel.read(f"{package.file_stem}.dist-info/METADATA")
    return BytesParser(policy=compat32).parsebytes(raw)


@pytest.fixture(params=PACKAGES, ids=lambda p: p.name)
def package(request: pytest.FixtureRequest) -> Package:
    found: Package = request.param
    return found


def test_all_five_packages_are_built(dist: Path) -> None:
    assert {p.name for p in PACKAGES} == {
        "workflows-core",
        "workflows-postgres",
        "workflows-worker",
        "workflows-cli",
        "currant",
    }
    for package in PACKAGES:
        assert list(dist.glob(f"{package.file_stem}-py3-none-any.whl")), package.name
        assert list(dist.glob(f"{package.file_stem}.tar.gz")), package.name


def test_each_package_folder_keeps_the_repository_license(package: Package) -> None:
    # A license file must lie inside its project (PEP 639), so each folder has a copy.
    assert (package.folder / "LICENSE").read_bytes() == LICENSE
    assert b"Apache License" in LICENSE and b"Version 2.0, January 2004" in LICENSE


def test_wheel_carries_the_license(dist: Path, package: Package) -> None:
    with _wheel(dist, package) as wheel:
        assert wheel.read(f"{package.file_stem}.dist-info/licenses/LICENSE") == LICENSE
        metadata = _metadata(wheel, package)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    # PyPI refuses an upload with both a License-Expression and a license classifier.
    assert not [c for c in metadata.get_all("Classifier", []) if c.startswith("License ::")]


def test_sdist_carries_the_license_readme_and_sources(dist: Path, package: Package) -> None:
    (path,) = dist.glob(f"{package.file_stem}.tar.gz")
    with tarfile.open(path) as sdist:
        names = set(sdist.getnames())
        top = package.file_stem
        assert {f"{top}/LICENSE", f"{top}/README.md", f"{top}/pyproject.toml"} <= names
        assert f"{top}/src/{package.module}/__init__.py" in names
        license_file = sdist.extractfile(f"{top}/LICENSE")
        assert license_file is not None and license_file.read() == LICENSE


def test_metadata_is_complete(dist: Path, package: Package) -> None:
    with _wheel(dist, package) as wheel:
        metadata = _metadata(wheel, package)
    assert Version(metadata["Metadata-Version"]) >= Version("2.4")  # License-Expression
    assert metadata["Name"] == package.name
    assert metadata["Version"] == package.version
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["Summary"]
    assert set(metadata.get_all("Classifier", [])) >= REQUIRED_CLASSIFIERS
    assert any(c.startswith("Development Status ::") for c in metadata.get_all("Classifier", []))
    assert any(c.startswith("Operating System ::") for c in metadata.get_all("Classifier", []))
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL", []))
    assert set(urls) == URL_LABELS
    assert all(url.startswith(PLACEHOLDER_REPOSITORY) for url in urls.values()), urls


def test_long_description_is_the_package_readme(dist: Path, package: Package) -> None:
    with _wheel(dist, package) as wheel:
        metadata = _metadata(wheel, package)
    readme = (package.folder / "README.md").read_text()
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().strip() == readme.strip()
    # A page, not a line: what it is, when to install it alone (or what it brings), an example.
    assert readme.count("\n") > 30
    assert "```" in readme


def test_wheel_is_typed(dist: Path, package: Package) -> None:
    with _wheel(dist, package) as wheel:
        assert f"{package.module}/py.typed" in wheel.namelist()


def test_version_is_written_in_the_metadata_alone(dist: Path, package: Package) -> None:
    # One source: a version literal left in the code would go stale at the next bump.
    literal = re.compile(rf"""["']{re.escape(package.version)}["']""".encode())
    with _wheel(dist, package) as wheel:
        stale = [
            name
            for name in wheel.namelist()
            if ".dist-info/" not in name and literal.search(wheel.read(name))
        ]
    assert not stale


def test_version_at_run_time_is_the_wheels(dist: Path, package: Package) -> None:
    module = importlib.import_module(package.module)
    assert module.__version__ == package.version
    assert module.__version__ == importlib.metadata.version(package.name)


def test_pins_on_our_own_packages_admit_the_version_built_beside_them(
    dist: Path, package: Package
) -> None:
    with _wheel(dist, package) as wheel:
        metadata = _metadata(wheel, package)
    pins = [Requirement(r) for r in metadata.get_all("Requires-Dist", [])]
    ours = [r for r in pins if r.name in OURS]
    if package.name != "workflows-core":
        assert ours, "every package but core depends on core"
    for requirement in ours:
        built = OURS[requirement.name].version
        assert requirement.specifier.contains(built), f"{requirement} refuses {built}"
