"""Stop strings end the output before them, also across chunk boundaries; nothing else is held back."""

import pytest

from mlx_router.serving.text import StopMatcher


def run(stops, pieces):
    m = StopMatcher(stops)
    out, stopped = "", False
    for p in pieces:
        text, stopped = m.feed(p)
        out += text
        if stopped:
            return out, True
    return out + m.flush(), False


@pytest.mark.parametrize(
    "stops, pieces, expected, stopped",
    [
        (["END"], ["hello ", "world"], "hello world", False),
        (["END"], ["hello E", "N", "D tail"], "hello ", True),
        (["END"], ["helloEND"], "hello", True),
        (["\n\n"], ["a\n", "\nb"], "a", True),
        (["abc", "b"], ["xab"], "xa", True),
        (["abc"], ["ab", "x"], "abx", False),
        (["abc"], ["ab"], "ab", False),
        ([], ["anything"], "anything", False),
        (["stop"], ["s", "t", "o", "p"], "", True),
    ],
)
def test_stop_matching(stops, pieces, expected, stopped):
    assert run(stops, pieces) == (expected, stopped)


def test_nothing_held_back_without_a_possible_match():
    m = StopMatcher(["END"])
    assert m.feed("hello") == ("hello", False)
    assert m.feed(" E") == (" ", False)
