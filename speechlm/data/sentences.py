"""The built-in text corpus: voice-assistant commands with intents and slots, plus general sentences.

Everything is written out in words (``"seven thirty"``, not ``"7:30"``) so that a TTS engine
says exactly the transcript. :func:`generate` is deterministic given a seed;
:func:`split` puts each distinct sentence in train or test by a hash of its text, so test
sentences never occur in training whatever the sample size.

>>> s = generate(20, seed=0)
>>> len(s), len({x.text for x in s})
(20, 20)
"""

from __future__ import annotations

import dataclasses
import hashlib
import random

ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
ORDINALS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth "
    "fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
).split()
MONTHS = "january february march april may june july august september october november december".split()
DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()


def number_words(n: int) -> str:
    """0 <= n < 1000 in words: 342 -> 'three hundred forty two'."""
    if n < 20:
        return ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return TENS[tens - 2] + ("" if ones == 0 else " " + ONES[ones])
    hundreds, rest = divmod(n, 100)
    return ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_words(rest))


def ordinal_words(n: int) -> str:
    """1 <= n <= 31: 23 -> 'twenty third'."""
    if n <= 20:
        return ORDINALS[n - 1]
    tens, ones = divmod(n, 10)
    if ones == 0:
        return TENS[tens - 2][:-1] + "ieth"
    return TENS[tens - 2] + " " + ORDINALS[ones - 1]


def clock_time(r: random.Random) -> str:
    h = r.randint(1, 12)
    m = r.choice([0, 0, 5, 10, 15, 20, 25, 30, 30, 35, 40, 45, 45, 50, 55, r.randint(1, 59)])
    style = r.random()
    if m == 0:
        text = number_words(h) + r.choice(["", " o'clock"])
    elif style < 0.25 and m in (15, 30, 45):
        text = {15: "quarter past ", 30: "half past ", 45: "quarter to "}[m] + number_words(h if m != 45 else h % 12 + 1)
    elif m < 10:
        text = number_words(h) + " oh " + number_words(m)
    else:
        text = number_words(h) + " " + number_words(m)
    return text + r.choice(["", "", " a m", " p m", " in the morning", " in the evening", " tonight"])


def date_words(r: random.Random) -> str:
    d = r.randint(1, 28)
    style = r.random()
    if style < 0.4:
        return f"{r.choice(MONTHS)} {ordinal_words(d)}"
    if style < 0.7:
        return f"the {ordinal_words(d)} of {r.choice(MONTHS)}"
    return r.choice(["today", "tomorrow", "the day after tomorrow", "next " + r.choice(DAYS), "this " + r.choice(DAYS), r.choice(DAYS)])


def duration_words(r: random.Random) -> str:
    unit = r.choice(["minute", "minute", "second", "hour"])
    n = r.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30, 40, 45, 50, 90])
    if n == 1:
        return r.choice(["one", "a"]) + " " + unit
    out = number_words(n) + " " + unit + "s"
    if unit == "hour" and r.random() < 0.3:
        out += " and " + number_words(r.choice([10, 15, 20, 30, 45])) + " minutes"
    return out


CITIES = (
    "london paris berlin tokyo boston chicago seattle denver austin madrid rome oslo dublin lisbon "
    "vienna prague warsaw cairo lagos nairobi sydney melbourne toronto montreal vancouver mumbai delhi "
    "beijing seoul bangkok lima bogota santiago miami atlanta phoenix portland glasgow edinburgh"
).split()
ROOMS = ["kitchen", "bedroom", "living room", "bathroom", "hallway", "office", "garage", "basement", "dining room", "porch", "nursery", "attic", "study", "guest room"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "white", "warm white", "cool white", "teal", "amber"]
GENRES = ["jazz", "rock", "classical music", "hip hop", "country", "blues", "reggae", "folk", "pop", "soul", "techno", "lo fi beats", "piano music", "the news"]
ARTISTS = [
    "the beatles", "miles davis", "taylor swift", "bob marley", "johnny cash", "adele", "queen", "nina simone",
    "the rolling stones", "billie holiday", "elton john", "david bowie", "aretha franklin", "louis armstrong",
    "radiohead", "coldplay", "beyonce", "frank sinatra", "ella fitzgerald", "stevie wonder", "mozart", "bach",
]
CONTACTS = [
    "mom", "dad", "alice", "bob", "charlie", "diana", "emma", "frank", "grace", "henry", "isabel", "jack",
    "karen", "liam", "maria", "noah", "olivia", "peter", "rachel", "sam", "tom", "victoria", "william", "zoe",
    "my sister", "my brother", "the office", "grandma", "uncle joe",
]
MESSAGES = [
    "i'm running late", "see you soon", "call me back", "i'll be home for dinner", "don't forget the milk",
    "happy birthday", "the meeting moved to friday", "can you pick me up", "i love you", "on my way",
    "thanks for yesterday", "where are you", "i left my keys at home", "let's meet at the station",
    "the package arrived", "good luck with the exam", "dinner is ready", "i'll call you later",
]
THINGS = ["milk", "bread", "eggs", "coffee", "apples", "rice", "butter", "cheese", "bananas", "tea", "pasta", "onions", "tomatoes", "soap", "batteries", "paper towels"]
TASKS = [
    "call the dentist", "pay the rent", "water the plants", "take out the trash", "feed the cat", "walk the dog",
    "buy a present", "book the tickets", "send the report", "pick up the kids", "renew my passport",
    "check the oven", "take my medicine", "clean the garage", "email the landlord", "charge my phone",
]

ADJ = "old young quiet loud small large bright dark warm cold heavy light quick slow happy tired clever gentle strange careful".split()
NOUNS = (
    "dog cat bird horse farmer teacher doctor child king sailor baker painter river forest garden city "
    "village window table letter story song boat train road bridge mountain storm candle kettle"
).split()
VERBS_T = "found carried watched painted opened closed followed built cleaned answered remembered visited crossed".split()
VERBS_I = "waited laughed slept arrived listened smiled wandered worked sang rested".split()
PLACES = ["near the river", "by the window", "in the garden", "at the station", "under the bridge", "on the hill",
          "after dinner", "before sunrise", "in the morning", "late at night", "across the street", "in the old house"]
GENERAL_FIXED = [
    "the birch canoe slid on the smooth planks", "glue the sheet to the dark blue background",
    "it's easy to tell the depth of a well", "these days a chicken leg is a rare dish",
    "rice is often served in round bowls", "the juice of lemons makes fine punch",
    "the box was thrown beside the parked truck", "four hours of steady work faced us",
    "a large size in stockings is hard to sell", "the boy was there when the sun rose",
    "a rod is used to catch pink salmon", "the source of the huge river is the clear spring",
    "kick the ball straight and follow through", "help the woman get back to her feet",
    "a pot of tea helps to pass the evening", "smoky fires lack flame and heat",
    "the soft cushion broke the man's fall", "the salt breeze came across from the sea",
    "the girl at the booth sold fifty bonds", "the small pup gnawed a hole in the sock",
]


def _alarm(r):
    t, d = clock_time(r), date_words(r)
    return r.choice([
        f"set an alarm for {t}", f"wake me up at {t}", f"set an alarm for {t} {d}",
        f"please set my alarm for {t}", f"cancel the alarm for {t}", f"can you wake me at {t} {d}",
        f"i need an alarm at {t}", f"move my alarm to {t}", f"turn off my {t} alarm",
    ])


def _timer(r):
    d = duration_words(r)
    return r.choice([
        f"set a timer for {d}", f"start a {d} timer", f"timer for {d}", f"count down {d}",
        f"set a {r.choice(['pasta', 'tea', 'laundry', 'oven', 'workout', 'study'])} timer for {d}",
        "how much time is left on my timer", f"add {d} to the timer", "stop the timer",
    ])


def _weather(r):
    c, d = r.choice(CITIES), date_words(r)
    return r.choice([
        f"what's the weather in {c}", f"what is the weather like {d}", f"will it rain in {c} {d}",
        f"do i need an umbrella {d}", f"how cold is it in {c}", f"what's the forecast for {c} {d}",
        f"is it going to snow {d}", f"how hot will it be in {c} {d}", f"tell me the weather for {d}",
        f"is it windy in {c} right now",
    ])


def _music(r):
    a, g = r.choice(ARTISTS), r.choice(GENRES)
    return r.choice([
        f"play some {g}", f"play songs by {a}", f"put on {g} in the {r.choice(ROOMS)}", f"shuffle my {g} playlist",
        f"play the latest album by {a}", f"i want to hear {a}", "skip this song", "turn the volume up",
        f"turn the volume down to {number_words(r.randint(1, 10))}", "pause the music", f"play {g} by {a}",
        f"add this song to my {g} playlist",
    ])


def _lights(r):
    room, color, pct = r.choice(ROOMS), r.choice(COLORS), number_words(r.choice([10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 100]))
    return r.choice([
        f"turn on the lights in the {room}", f"turn off the {room} lights", f"dim the {room} lights to {pct} percent",
        f"set the {room} lights to {color}", "switch off all the lights", f"make the {room} brighter",
        f"set the brightness to {pct} percent", f"change the lights to {color}", f"are the {room} lights on",
        f"turn the {room} lamp {r.choice(['on', 'off'])}",
    ])


def _message(r):
    c, m = r.choice(CONTACTS), r.choice(MESSAGES)
    return r.choice([
        f"send a message to {c} saying {m}", f"text {c} {m}", f"tell {c} {m}", f"message {c} that {m}",
        f"send {c} a text saying {m}", f"read my messages from {c}", f"reply to {c} {m}", f"call {c}",
    ])


def _time_date(r):
    c = r.choice(CITIES)
    return r.choice([
        "what time is it", f"what time is it in {c}", "what's the date today", f"what day is {date_words(r)}",
        f"how many days until {date_words(r)}", f"what's the time in {c} right now", "what day of the week is it",
        f"is {date_words(r)} a holiday",
    ])


def _numbers(r):
    a, b = number_words(r.randint(0, 999)), number_words(r.randint(1, 99))
    return r.choice([
        f"what is {a} plus {b}", f"what's {a} minus {b}", f"what is {a} times {b}", f"divide {a} by {b}",
        f"what's {b} percent of {a}", f"convert {b} miles to kilometers", f"how many ounces in {b} pounds",
        f"what is the square root of {a}", f"convert {a} dollars to euros", f"call {' '.join(ONES[r.randint(0, 9)] for _ in range(r.randint(3, 7)))}",
    ])


def _reminder(r):
    task, t, d = r.choice(TASKS), clock_time(r), date_words(r)
    return r.choice([
        f"remind me to {task} at {t}", f"remind me to {task} {d}", f"add {r.choice(THINGS)} to my shopping list",
        f"add {r.choice(THINGS)} and {r.choice(THINGS)} to the shopping list", f"what's on my list {d}",
        f"set a reminder to {task} {d} at {t}", f"don't let me forget to {task}", f"what are my reminders for {d}",
    ])


def _general(r):
    n1, n2 = r.choice(NOUNS), r.choice(NOUNS)
    return r.choice([
        f"the {r.choice(ADJ)} {n1} {r.choice(VERBS_T)} the {r.choice(ADJ)} {n2}",
        f"a {r.choice(ADJ)} {n1} {r.choice(VERBS_I)} {r.choice(PLACES)}",
        f"the {n1} {r.choice(VERBS_T)} a {n2} {r.choice(PLACES)}",
        f"my {r.choice(ADJ)} {n1} {r.choice(VERBS_I)} {r.choice(PLACES)} and the {n2} {r.choice(VERBS_I)}",
        r.choice(GENERAL_FIXED),
    ])


INTENTS = {
    "set_alarm": _alarm,
    "set_timer": _timer,
    "get_weather": _weather,
    "play_music": _music,
    "control_lights": _lights,
    "send_message": _message,
    "get_time_date": _time_date,
    "calculate": _numbers,
    "reminder": _reminder,
    "general": _general,
}


@dataclasses.dataclass(frozen=True)
class Sentence:
    text: str  # lower-case words, no digits or punctuation except apostrophes
    intent: str  # one of INTENTS


def generate(n: int, seed: int = 0, max_tries_factor: int = 50) -> list[Sentence]:
    """``n`` distinct sentences, intents drawn uniformly; deterministic given ``seed``."""
    r = random.Random(seed)
    names = list(INTENTS)
    seen: dict[str, str] = {}
    tries = 0
    while len(seen) < n:
        tries += 1
        if tries > n * max_tries_factor:
            raise ValueError(f"the sentence generator ran out of distinct sentences after {len(seen)}")
        intent = r.choice(names)
        text = " ".join(INTENTS[intent](r).split())
        seen.setdefault(text, intent)
    return [Sentence(t, i) for t, i in seen.items()]


def is_test(text: str, test_fraction: float = 0.1) -> bool:
    """Stable assignment of a sentence to the test split by hashing its text."""
    h = int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")
    return h / 2**64 < test_fraction


def split(sentences: list[Sentence], test_fraction: float = 0.1) -> tuple[list[Sentence], list[Sentence]]:
    """(train, test): disjoint by text."""
    train = [s for s in sentences if not is_test(s.text, test_fraction)]
    test = [s for s in sentences if is_test(s.text, test_fraction)]
    return train, test
