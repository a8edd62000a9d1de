import jiwer
import pytest

from speechlm.metrics import error_rates, utterance_errors

REFS = ["set an alarm for seven", "what is the weather in paris", "call mom"]
HYPS = ["set alarm for seven thirty", "what is whether in paris", "call mom"]


def test_matches_jiwer():
    r = error_rates(REFS, HYPS)
    assert r.wer == pytest.approx(jiwer.wer(REFS, HYPS))
    assert r.cer == pytest.approx(jiwer.cer(REFS, HYPS))
    assert r.words == 13 and r.word_errors == round(jiwer.wer(REFS, HYPS) * 13)


def test_normalizes_case_and_punctuation():
    assert error_rates(["Call Mom!"], ["call mom"]).wer == 0.0


def test_utterance_errors_and_bad_input():
    assert utterance_errors("a b c", "a x c d") == (2, 3)
    with pytest.raises(ValueError, match="every reference is empty"):
        error_rates([""], ["x"])
    with pytest.raises(ValueError, match="2 references but 1"):
        error_rates(["a", "b"], ["a"])


def test_in_scope_accuracy_and_out_of_scope_recall():
    from speechlm.metrics import classification_report

    r = classification_report(["a", "a", "oos", "oos", "b"], ["a", "oos", "oos", "b", "b"], ["a", "b", "oos"])
    assert r.scope("oos") == {"in_scope_accuracy": 2 / 3, "in_scope_examples": 3, "oos_recall": 0.5, "oos_examples": 2}
    assert r.scope("none") == {"in_scope_accuracy": r.accuracy, "in_scope_examples": 5, "oos_recall": None, "oos_examples": 0}
