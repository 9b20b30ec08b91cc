import json

import pytest

from ramp_edge.evaluate.compare import pair
from ramp_edge.evaluate.tasks import TaskResult


def test_retention_uses_acc_norm_when_reported():
    ref = [
        TaskResult("arc_easy", 1, 10, 0.5, 0.1, 0.6, 0.1, 1.0),
        TaskResult("boolq", 1, 10, 0.6, 0.1, None, None, 1.0),
    ]
    cand = [
        TaskResult("arc_easy", 1, 10, 0.4, 0.1, 0.3, 0.1, 1.0),
        TaskResult("boolq", 1, 10, 0.6, 0.1, None, None, 1.0),
    ]
    rows = pair(ref, cand)
    assert rows[0].retention == pytest.approx(0.5)
    assert rows[1].retention == pytest.approx(1.0)


@pytest.mark.llama
@pytest.mark.slow
def test_compare_cli_self(invoke, smollm2):
    result = invoke(
        [
            "eval",
            "compare",
            "smollm2-135m",
            "--reference",
            "smollm2-135m",
            "--tasks",
            "arc_easy",
            "--limit",
            "5",
            "--chunks",
            "1",
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["mean_retention"] == pytest.approx(1.0)
    assert doc["kld"]["mean_kld"] < 1e-6


def test_compare_unknown_task(invoke, smollm2):
    result = invoke(
        [
            "eval",
            "compare",
            "smollm2-135m",
            "--reference",
            "smollm2-135m",
            "--tasks",
            "nope",
            "--limit",
            "1",
            "--chunks",
            "0",
        ]
    )
    assert result.exit_code == 3 and "nope" in result.stderr
