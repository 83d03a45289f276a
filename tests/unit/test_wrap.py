"""`report._wrap`, the packet table's wrapping of evidence sentences, against textwrap itself."""

from __future__ import annotations

import textwrap

from hypothesis import given, strategies as st

from probe.render.report import _wrap
from tests.properties.exchanges import property_settings

WORDS = st.sampled_from(["TTL", "51,", "as", "the", "server's", "SYN-ACK", "arrived", "93.9", "ms", "after", "our",
                         "request", "(round", "trip", "93.1", "ms)", "a", "x" * 30, "--", "-", "", " ", "\t", "é",
                         "forged", "reset:", "seq", "+1460", "window", "0."])


def reference(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


@given(st.lists(WORDS, max_size=40), st.sampled_from([" ", " ", " ", "  "]), st.integers(10, 90))
@property_settings(500)
def test_the_same_lines_as_textwrap(words, space, width):
    text = space.join(words)
    assert _wrap(text, width) == reference(text, width)


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=120), st.integers(5, 90))
@property_settings(300)
def test_any_text_the_same_lines_as_textwrap(text, width):
    assert _wrap(text, width) == reference(text, width)


def test_an_evidence_sentence_packed_greedily():
    sentence = ("arrived 93.9 ms after our request it answers (round trip 93.1 ms), sooner than any answer "
                "from the server could")
    assert _wrap(sentence, 40) == reference(sentence, 40)
    assert max(len(line) for line in _wrap(sentence, 40).split("\n")) <= 40
