"""Lark grammars without recursion become one regex that accepts exactly their texts (custom tools' inputs)."""

from __future__ import annotations

import re

import pytest

from mlx_router.constraints.errors import UnsupportedSchemaError
from mlx_router.constraints.grammars import validate_json_schema
from mlx_router.constraints.lark_regex import lark_to_regex

# Codex's apply_patch grammar, as its freeform tool sends it
APPLY_PATCH = r"""start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?

hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?

filename: /(.+)/
add_line: "+" /(.*)/ LF -> line

change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF

%import common.LF
"""

PATCHES = [
    "*** Begin Patch\n*** Add File: hello.txt\n+Hello world\n*** End Patch\n",
    "*** Begin Patch\n*** Update File: a.py\n@@ def f():\n-    return 1\n+    return 2\n*** End Patch",
    "*** Begin Patch\n*** Delete File: old.txt\n*** Update File: b.py\n*** Move to: c.py\n x\n"
    "*** End of File\n*** End Patch\n",
]
NOT_PATCHES = [
    "",
    "*** Begin Patch\n*** End Patch\n",  # no hunk
    "--- a.py\n+++ b.py\n",
    "*** Begin Patch\n*** Add File: x\nno plus\n*** End Patch\n",
    "prefix *** Begin Patch\n*** Delete File: a\n*** End Patch\n",
    '{"input": "*** Begin Patch"}',
]


def matches(grammar: str, text: str) -> bool:
    return re.fullmatch(lark_to_regex(grammar), text) is not None


@pytest.mark.parametrize("patch", PATCHES)
def test_apply_patch_grammar_accepts_patches(patch: str) -> None:
    assert matches(APPLY_PATCH, patch)


@pytest.mark.parametrize("text", NOT_PATCHES)
def test_apply_patch_grammar_refuses_other_text(text: str) -> None:
    assert not matches(APPLY_PATCH, text)


def test_the_regex_is_one_llguidance_enforces_in_a_json_string() -> None:
    pattern = "^(?:" + lark_to_regex(APPLY_PATCH) + ")$"
    validate_json_schema({"type": "object", "properties": {"input": {"type": "string", "pattern": pattern}}})


@pytest.mark.parametrize(
    ("grammar", "yes", "no"),
    [
        ('start: "a"i "b"', ["ab", "Ab"], ["aB", "b"]),
        ('start: "x" ~ 2..3', ["xx", "xxx"], ["x", "xxxx"]),
        ('start: "x"{2}', ["xx"], ["x", "xxx"]),
        ('start: ["-"] DIGIT+\n%import common.DIGIT', ["-12", "3"], ["-", "a"]),
        ('start: "a".."c"+', ["abc", "cab"], ["d"]),
        ("start: /a.b/s", ["a\nb"], ["ab"]),
        ('start: WORD (" " WORD)*  // words\n%import common (WORD)', ["hi there"], ["hi  there"]),
        ('?start: x | y\nx: "1"\ny.2: "2"  # priorities are ignored', ["1", "2"], ["12"]),
        ('start: "a" -> alias\n    | "b"', ["a", "b"], ["ab"]),
        ('start: "tab\\there"', ["tab\there"], ["tab\\there"]),
    ],
)
def test_constructs(grammar: str, yes: list[str], no: list[str]) -> None:
    for text in yes:
        assert matches(grammar, text), (grammar, text)
    for text in no:
        assert not matches(grammar, text), (grammar, text)


@pytest.mark.parametrize(
    ("grammar", "reason"),
    [
        ('start: a\na: "(" a ")" | "x"', "refers to itself"),
        ('start: "x"\n%ignore " "', "%ignore"),
        ("start: X\n%import common.FOO", "common.FOO"),
        ("start: X\n%import python.NAME", "only Lark's common terminals"),
        ('start: "x" <|end|>', "special token"),
        ("start: missing", "never defined"),
        ('a: "x"', "no start rule"),
        ('start: "a"\n_sep{x}: x ("," x)*', "is a template"),
        ('start: %json {"type": "object"}', "%json"),
    ],
)
def test_what_cannot_be_a_regex_says_why(grammar: str, reason: str) -> None:
    with pytest.raises(UnsupportedSchemaError, match=re.escape(reason)) as info:
        lark_to_regex(grammar)
    assert info.value.param == "tools"
