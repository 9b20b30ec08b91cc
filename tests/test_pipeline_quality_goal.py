"""deploy's goal when nothing binds: the smallest size whose measured KLD meets --max-kld."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ramp_edge.models import resolve
from ramp_edge.pipeline import DeployRequest, _smallest_within_kld
from ramp_edge.source import open_source


@pytest.fixture
def source(stories_gguf):
    return open_source(resolve(str(stories_gguf)))


def _world(source, optimum_frac: float, bias: float):
    """KLD falls as the file grows and crosses the goal at optimum_frac of the source size;
    the table's estimate is off by a constant factor `bias` (as a calibrated table is)."""
    size = Path(source.path).stat().st_size
    goal = 0.05

    def kld(n: int) -> float:
        return goal * (optimum_frac * size / n) ** 6

    measured: list[int] = []

    def build(n: int):
        measured.append(n)
        recipe = SimpleNamespace(notes={"estimated_error": kld(n) / bias})
        return Path("x.gguf"), None, recipe, {"mean_kld": kld(n)}

    return size, goal, build, measured, (lambda n: kld(n) / bias)


@pytest.mark.parametrize("bias", [0.3, 1.0, 4.0])
def test_finds_the_smallest_size_within_the_goal_in_three_runs(source, bias):
    size, goal, build, measured, estimate = _world(source, 0.6, bias)
    request = DeployRequest(max_kld=goal, search_steps=3)
    found = _smallest_within_kld(source, request, build, estimate, say=lambda _: None)
    assert found is not None and len(measured) <= 3
    best, built = found
    assert built[3]["mean_kld"] <= goal
    # within 3% of the true optimum however far off the table's estimate is
    assert 0.6 * size <= best <= 0.62 * size


def test_an_unreachable_goal_returns_nothing(source):
    size, goal, build, measured, estimate = _world(source, 1.5, 1.0)
    request = DeployRequest(max_kld=goal, search_steps=3)
    assert _smallest_within_kld(source, request, build, estimate, say=lambda _: None) is None
    assert all(n < size for n in measured)


def test_a_try_just_under_the_goal_ends_the_search(source):
    _, goal, build, measured, estimate = _world(source, 0.6, 1.0)
    request = DeployRequest(max_kld=goal, search_steps=3)
    found = _smallest_within_kld(source, request, build, estimate, say=lambda _: None)
    assert found is not None and goal * 0.9 <= found[1][3]["mean_kld"] <= goal
    assert len(measured) == 1  # the exact estimate lands at the goal on the first try
