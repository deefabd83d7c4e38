"""`studio plugins new NAME`: the package it writes passes its own tests as written,
builds into a wheel with the entry point, and Studio finds the plugin in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

from click.testing import CliRunner

from studio.cli import cli


def test_a_new_plugin_passes_its_own_tests_and_is_found_once_installed(tmp_path):
    result = CliRunner().invoke(cli, ["plugins", "new", "glitch", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    package = tmp_path / "studio-glitch"
    assert {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "studio_glitch/__init__.py", "tests/test_glitch.py"}

    # its tests, as generated, with Studio's pytest plugin (studio.testing)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=package,
                           env={**os.environ, "PYTHONPATH": str(package)}, capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout

    # a wheel, as pip builds it, holds the entry point; unpacked on a path, Studio finds it
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                            str(wheels), str(package)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("studio_glitch-0.1.0-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
        entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        assert "[studio]\nglitch = studio_glitch" in archive.read(entry_points).decode()
    listing = subprocess.run([sys.executable, "-m", "studio", "plugins", "list", "--json"],
                             env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=120)
    plugins = {p["name"]: p for p in json.loads(listing.stdout)}
    assert plugins["glitch"]["generators"] == ["image.glitch"] and plugins["glitch"]["ok"]


def test_a_bad_name_or_a_taken_folder_is_refused(tmp_path):
    result = CliRunner().invoke(cli, ["plugins", "new", "Glitch-Pro", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "use lower-case letters, digits and _" in result.output
    (tmp_path / "studio-glitch").mkdir()
    (tmp_path / "studio-glitch" / "mine.txt").write_text("keep me")
    result = CliRunner().invoke(cli, ["plugins", "new", "glitch", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "exists and is not empty" in result.output
    assert (tmp_path / "studio-glitch" / "mine.txt").read_text() == "keep me"
