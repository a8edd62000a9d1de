import json

import numpy as np
import pytest

from speechlm.errors import CheckpointError
from speechlm.intent import IntentClassifier, IntentConfig, decide

# the two intents share every word; only the word order tells them apart, which character
# n-grams inside word boundaries cannot see and word bigrams can
TEXTS = ["play the radio then stop", "stop the radio then play"] * 6
LABELS = ["play_first", "stop_first"] * 6


def test_word_bigrams_see_what_characters_inside_words_cannot():
    chars_only = IntentClassifier.train(TEXTS, LABELS, IntentConfig(word_ngram_max=0))
    with_words = IntentClassifier.train(TEXTS, LABELS, IntentConfig(word_ngram_max=2))
    assert chars_only.coef.shape == (2, 2**16) and with_words.coef.shape == (2, 2**17)
    pairs = ["play the radio then stop", "stop the radio then play"]
    assert [p.intent for p in with_words.predict(pairs)] == ["play_first", "stop_first"]
    # the same bag of character n-grams: the characters-only model cannot tell the two apart
    a, b = chars_only.predict(pairs)
    assert a.scores == pytest.approx(b.scores)
    probs = with_words.probabilities(pairs)
    assert probs.shape == (2, 2) and probs.argmax(1).tolist() == [0, 1] and np.allclose(probs.sum(1), 1)
    assert with_words.probabilities([]).shape == (0, 2) and with_words.predict([]) == []  # an empty batch


def test_nbest_probabilities_weigh_each_transcript_by_its_posterior():
    clf = IntentClassifier.train(TEXTS, LABELS, IntentConfig(word_ngram_max=2))
    play, stop = "play the radio then stop", "stop the radio then play"
    p_play, p_stop = clf.probabilities([play, stop])
    # one hypothesis: its own probabilities, whatever its score
    assert clf.nbest_probabilities([[(play, -40.0)]])[0] == pytest.approx(p_play)
    # scores -1 and -1 - log 3: weights 3/4 and 1/4
    mixed = clf.nbest_probabilities([[(stop, -1.0), (play, -1.0 - np.log(3))]], scale=1.0)[0]
    assert mixed == pytest.approx(0.75 * p_stop + 0.25 * p_play)
    assert clf.nbest_probabilities([[(stop, -1.0), (play, -30.0)]])[0].argmax() == 1  # a far likelier transcript decides
    assert clf.nbest_probabilities([[(stop, -1.0), (play, -30.0)]], scale=0.0)[0] == pytest.approx((p_stop + p_play) / 2)
    with pytest.raises(ValueError, match="list 1 is empty"):
        clf.nbest_probabilities([[]])
    with pytest.raises(ValueError, match="scale"):
        clf.nbest_probabilities([[(play, 0.0)]], scale=-1)


def test_save_load_round_trip_and_models_saved_before_word_ngrams(tmp_path):
    clf = IntentClassifier.train(TEXTS, LABELS, IntentConfig(word_ngram_max=2))
    loaded = IntentClassifier.load(clf.save(tmp_path / "new"))
    assert loaded.cfg == clf.cfg and loaded.predict(TEXTS[:2])[0].scores == pytest.approx(clf.predict(TEXTS[:2])[0].scores)

    old = IntentClassifier.train(TEXTS, LABELS, IntentConfig(word_ngram_max=0))
    d = old.save(tmp_path / "old")
    config = json.loads((d / "config.json").read_text())
    del config["intent"]["word_ngram_max"]  # what a model saved before word n-grams holds
    (d / "config.json").write_text(json.dumps(config))
    again = IntentClassifier.load(d)
    assert again.cfg.word_ngram_max == 0
    np.testing.assert_allclose(again.coef, old.coef)

    config["intent"]["word_ngram_max"] = 2  # a config that does not match its weights
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match"):
        IntentClassifier.load(d)


def test_out_of_scope_rejection_below_a_probability_threshold(tmp_path):
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])
    assert decide(probs, ["a", "b", "c"]) == ["a", "a", "c"]
    assert decide(probs, ["a", "b", "c"], reject_below=0.5, reject_label="none") == ["a", "none", "c"]

    texts = ["set an alarm for six", "wake me at seven", "what's the weather in paris", "will it rain tomorrow"] * 3
    labels = ["alarm", "alarm", "weather", "weather"] * 3
    clf = IntentClassifier.train(texts, labels, IntentConfig(reject_below=0.9))
    queries = ["set an alarm for six", "order a pizza with olives"]
    plain = clf.predict(queries, reject_below=0.0)
    assert plain[0].intent == "alarm" and plain[1].intent in ("alarm", "weather")
    assert plain[1].confidence < 0.9 < plain[0].confidence  # an unrelated request is an unsure one
    saved = IntentClassifier.load(clf.save(tmp_path / "m"))
    rejected = saved.predict(queries)  # the saved threshold applies by default
    assert [p.intent for p in rejected] == ["alarm", "oos"] and rejected[1].confidence == pytest.approx(plain[1].confidence)
    assert [p.intent for p in saved.predict(queries, reject_below=0.0)] == [p.intent for p in plain]
    with pytest.raises(ValueError, match="reject_below"):
        IntentConfig(reject_below=1.0)
