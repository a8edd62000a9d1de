from speechlm.data import sentences
from speechlm.data.tokenizer import normalize_text


def test_at_least_ten_thousand_distinct_labelled_sentences():
    s = sentences.generate(12000, seed=0)
    assert len({x.text for x in s}) == 12000
    assert {x.intent for x in s} == set(sentences.INTENTS)
    assert all(x.text == normalize_text(x.text) for x in s)  # words only: what the TTS says is the transcript
    assert not any(ch.isdigit() for x in s for ch in x.text)


def test_deterministic_and_split_disjoint():
    a = sentences.generate(3000, seed=5)
    assert a == sentences.generate(3000, seed=5)
    train, test = sentences.split(a)
    assert not {x.text for x in train} & {x.text for x in test}
    assert 0.05 < len(test) / len(a) < 0.15
    # the split of a sentence does not depend on which sample it came from
    other_train, other_test = sentences.split(sentences.generate(3000, seed=6))
    assert not {x.text for x in other_train} & {x.text for x in test}


def test_number_words():
    assert sentences.number_words(0) == "zero"
    assert sentences.number_words(42) == "forty two"
    assert sentences.number_words(900) == "nine hundred"
    assert sentences.number_words(315) == "three hundred fifteen"
    assert sentences.ordinal_words(23) == "twenty third"
    assert sentences.ordinal_words(30) == "thirtieth"
