"""The measured search scores text the calibration statistics never saw."""

from __future__ import annotations

from ramp_edge.evaluate.assembled import EvalSettings
from ramp_edge.evaluate.perplexity import load_text
from ramp_edge.features.stats import DEFAULT_DATA, DEFAULT_N_SEQ, DEFAULT_SEQ_LEN


def test_search_text_is_the_second_half_of_the_calibration_text():
    full, full_sha = load_text(DEFAULT_DATA)
    late, late_sha = load_text(EvalSettings().data)
    assert EvalSettings().data == "wikitext2-valid-late"
    assert full.endswith(late) and late_sha != full_sha
    assert len(full) / 2 <= len(full) - len(late) <= len(full) / 2 + 2000
    # the statistics read the first DEFAULT_N_SEQ windows, a few characters per token
    assert len(full) - len(late) > 8 * DEFAULT_N_SEQ * DEFAULT_SEQ_LEN
