"""The README's list of what `make demo` and `make test` install is the one the scripts use."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install-system-packages"


def script_packages(command: str) -> list[str]:
    """The Debian packages `install-system-packages` installs for ``command`` (demo or test)."""
    result = subprocess.run(
        ["bash", str(SCRIPT), "--list", command], capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def readme_packages(command: str) -> list[str]:
    """The packages in the Debian packages column of the README's row for `make <command>`."""
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith(f"`make {command}`"):
            return re.findall(r"`([a-z0-9][a-z0-9.+-]*)`", cells[1])
    raise AssertionError(f"the README has no table row for `make {command}`")


def test_readme_lists_exactly_the_packages_the_demo_installs() -> None:
    assert readme_packages("demo") == script_packages("demo")


def test_readme_lists_exactly_the_packages_the_tests_add_to_the_demos() -> None:
    demo = script_packages("demo")
    assert demo + readme_packages("test") == script_packages("test")


def test_demo_installs_none_of_the_test_only_tools() -> None:
    demo = set(script_packages("demo"))
    assert not demo & {"prometheus", "prometheus-pushgateway", "chromium", "age", "nodejs", "npm"}


def test_make_demo_and_make_test_install_their_own_lists() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    demo_recipe = makefile.split("$(VENV)/.installed-demo:", 1)[1].split("\n\n", 1)[0]
    test_recipe = makefile.split("$(VENV)/.installed-test:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/install-system-packages demo" in demo_recipe
    assert "[test]" not in demo_recipe and "install-test-tools" not in demo_recipe
    assert "scripts/install-system-packages test" in test_recipe
    assert "-e '.[test]'" in test_recipe and "scripts/install-test-tools" in test_recipe
