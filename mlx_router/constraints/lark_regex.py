"""A Lark grammar without recursion, written as one regular expression (Rust `regex` syntax, as llguidance reads).

Why: a custom tool's input reaches the model inside the JSON arguments of a function call (`{"input": "..."}`,
see `conversation/normalize.py`), and llguidance can constrain a JSON string only by a regex (`pattern`), which
it matches against the decoded string and escapes itself. A grammar whose rules never refer back to themselves
(Codex's `apply_patch` grammar is one) describes a regular language, so inlining every rule gives a regex that
accepts exactly the same texts.

Supported: rules and terminals (`?`/`!`/`_` prefixes and `.priority` suffixes ignored), strings (with the `i`
flag), regexes (`/.../` with `imsx` flags), string ranges (`"a".."z"`), groups, `[optional]`, `? * +`, `~ n`,
`~ n..m`, `{n}`, `{n,m}`, aliases (`-> name`, ignored), comments, and `%import common.NAME` / `%import common
(A, B)` for the common terminals. Refused with `UnsupportedSchemaError` (the reason in its message): recursion,
`%ignore`, other directives and imports, templates, special tokens, `%json`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from mlx_router.constraints.errors import UnsupportedSchemaError

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>(?://|\#)[^\n]*)
  | (?P<string>"(?:\\.|[^"\\\n])*"i?)
  | (?P<regex>/(?:\\.|[^/\\\n])+/[imslux]*)
  | (?P<directive>%[a-z]+)
  | (?P<special><[^<>\s]+>)
  | (?P<name>[?!]?[A-Za-z_][A-Za-z0-9_\-]*(?:\.-?\d+)?)
  | (?P<number>\d+)
  | (?P<op>->|\.\.|[:|()\[\]?*+~{},.])
    """,
    re.VERBOSE,
)
_LITERAL_META = set("\\.+*?()|[]{}^$#&-~")
# Lark's `common.lark` terminals, as regexes (ESCAPED_STRING without Lark's look-behind, which Rust lacks)
_COMMON = {
    "DIGIT": r"[0-9]",
    "HEXDIGIT": r"[0-9a-fA-F]",
    "INT": r"[0-9]+",
    "SIGNED_INT": r"[+\-]?[0-9]+",
    "DECIMAL": r"(?:[0-9]+\.[0-9]*|\.[0-9]+)",
    "FLOAT": r"(?:[0-9]+[eE][+\-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+\-]?[0-9]+)?)",
    "SIGNED_FLOAT": r"[+\-]?(?:[0-9]+[eE][+\-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+\-]?[0-9]+)?)",
    "NUMBER": r"(?:[0-9]+[eE][+\-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+\-]?[0-9]+)?|[0-9]+)",
    "SIGNED_NUMBER": r"[+\-]?(?:[0-9]+[eE][+\-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+\-]?[0-9]+)?|[0-9]+)",
    "ESCAPED_STRING": r'"(?:[^"\\\n]|\\.)*"',
    "LCASE_LETTER": r"[a-z]",
    "UCASE_LETTER": r"[A-Z]",
    "LETTER": r"[A-Za-z]",
    "WORD": r"[A-Za-z]+",
    "CNAME": r"[_A-Za-z][_A-Za-z0-9]*",
    "WS_INLINE": r"[ \t]+",
    "WS": r"[ \t\f\r\n]+",
    "CR": r"\r",
    "LF": r"\n",
    "NEWLINE": r"(?:\r?\n)+",
    "SH_COMMENT": r"#[^\n]*",
    "CPP_COMMENT": r"//[^\n]*",
}


def _unsupported(reason: str) -> UnsupportedSchemaError:
    return UnsupportedSchemaError(f"the custom tool's lark grammar cannot be enforced: {reason}", param="tools")


@dataclass
class _Tok:
    kind: str
    text: str


def _tokens(text: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _unsupported(f"unexpected text at {text[pos : pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind == "ws" and "\n" in m.group():
            out.append(_Tok("newline", "\n"))
        elif kind not in ("ws", "comment"):
            out.append(_Tok(kind, m.group()))
    return out


def _statements(tokens: list[_Tok]) -> list[list[_Tok]]:
    """Split at line starts that begin a definition (`name :`) or a directive; other lines continue one."""
    statements: list[list[_Tok]] = []
    at_line_start = True
    for i, tok in enumerate(tokens):
        if tok.kind == "newline":
            at_line_start = True
            continue
        starts = tok.kind == "directive" or (
            tok.kind == "name" and i + 1 < len(tokens) and tokens[i + 1].text in (":", "{")
        )
        if (at_line_start and starts) or not statements:
            statements.append([])
        statements[-1].append(tok)
        at_line_start = False
    return statements


def _base_name(name: str) -> str:
    return name.lstrip("?!").split(".")[0]


class _Converter:
    def __init__(self, definition: str) -> None:
        self.rules: dict[str, list[_Tok]] = {}
        for st in _statements(_tokens(definition)):
            self._statement(st)
        self._done: dict[str, str] = {}
        self._active: list[str] = []

    def _statement(self, st: list[_Tok]) -> None:
        head = st[0]
        if head.kind == "directive":
            self._directive(head.text, st[1:])
            return
        if head.kind != "name" or len(st) < 2:
            raise _unsupported(f"expected a rule definition, found {head.text!r}")
        if st[1].text == "{":
            raise _unsupported(f"rule {head.text} is a template")
        self.rules[_base_name(head.text)] = st[2:]

    def _directive(self, name: str, rest: list[_Tok]) -> None:
        if name != "%import":
            raise _unsupported(f"{name} is not supported (only %import common.NAME)")
        spec = "".join(t.text for t in rest)  # e.g. "common.LF", "common.LF->NL", "common(LF,WS)"
        one = re.fullmatch(r"common\.(\w+)(?:->(\w+))?", spec)
        many = re.fullmatch(r"common\(([\w,]+)\)", spec)
        if one is not None:
            names, alias = [one.group(1)], one.group(2)
        elif many is not None:
            names, alias = many.group(1).split(","), None
        else:
            raise _unsupported(f"%import {spec}: only Lark's common terminals can be imported")
        for imported in names:
            if imported not in _COMMON:
                raise _unsupported(f"common.{imported} is not one of the common terminals known here")
            self.rules[alias or imported] = [_Tok("regex", "/" + _COMMON[imported].replace("/", "\\/") + "/")]

    def regex(self) -> str:
        if "start" not in self.rules:
            raise _unsupported("it has no start rule")
        return self._rule("start")

    def _rule(self, name: str) -> str:
        if name in self._done:
            return self._done[name]
        if name in self._active:
            raise _unsupported(f"rule {name} refers to itself, so the grammar is not regular")
        if name not in self.rules:
            raise _unsupported(f"{name} is used but never defined")
        self._active.append(name)
        parser = _Expr(self.rules[name], self)
        regex = parser.alternatives()
        if not parser.at_end():
            raise _unsupported(f"rule {name}: unexpected {parser.peek_text()!r}")
        self._active.pop()
        self._done[name] = regex
        return regex


class _Expr:
    """Recursive descent over one rule's body."""

    def __init__(self, tokens: list[_Tok], conv: _Converter) -> None:
        self.toks = tokens
        self.pos = 0
        self.conv = conv

    def at_end(self) -> bool:
        return self.pos >= len(self.toks)

    def peek_text(self) -> str:
        return "" if self.at_end() else self.toks[self.pos].text

    def take(self, text: str | None = None) -> _Tok:
        if self.at_end() or (text is not None and self.toks[self.pos].text != text):
            raise _unsupported(f"expected {text or 'more'} at {self.peek_text()!r}")
        self.pos += 1
        return self.toks[self.pos - 1]

    def alternatives(self) -> str:
        options = [self.sequence()]
        while self.peek_text() == "|":
            self.take()
            options.append(self.sequence())
        return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"

    def sequence(self) -> str:
        parts = []
        while not self.at_end() and self.peek_text() not in ("|", ")", "]"):
            if self.peek_text() == "->":  # an alias names the tree node: nothing to match
                self.take()
                self.take()
                continue
            parts.append(self.repeated())
        return "".join(parts)

    def repeated(self) -> str:
        atom = self.atom()
        text = self.peek_text()
        if text in ("?", "*", "+"):
            self.take()
            return f"(?:{atom}){text}"
        if text == "~":
            self.take()
            low = self.take().text
            high = low
            if self.peek_text() == "..":
                self.take()
                high = self.take().text
            return f"(?:{atom}){{{low},{high}}}"
        if text == "{":
            self.take()
            count = self.take().text
            if self.peek_text() == ",":
                self.take()
                count += "," + (self.take().text if self.peek_text() != "}" else "")
            self.take("}")
            return f"(?:{atom}){{{count}}}"
        return atom

    def atom(self) -> str:
        tok = self.take()
        if tok.text in ("(", "["):
            inner = self.alternatives()
            self.take(")" if tok.text == "(" else "]")
            return f"(?:{inner})" if tok.text == "(" else f"(?:{inner})?"
        if tok.kind == "string":
            if self.peek_text() == "..":
                self.take()
                return _range(tok.text, self.take().text)
            return _string(tok.text)
        if tok.kind == "regex":
            return _regex(tok.text)
        if tok.kind == "name":
            return "(?:" + self.conv._rule(_base_name(tok.text)) + ")"
        if tok.kind == "special":
            raise _unsupported(f"special token {tok.text} cannot appear in a tool's text input")
        raise _unsupported(f"{tok.text!r} is not supported")


def _decode(literal: str) -> str:
    body = literal[:-1] if literal.endswith("i") else literal
    try:
        return str(ast.literal_eval(body))
    except (ValueError, SyntaxError):
        raise _unsupported(f"bad string {literal}") from None


def _escape(text: str) -> str:
    out = []
    for c in text:
        if c in _LITERAL_META:
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or c == "\x7f":
            out.append(f"\\x{{{ord(c):x}}}")
        else:
            out.append(c)
    return "".join(out)


def _string(literal: str) -> str:
    escaped = _escape(_decode(literal))
    return f"(?i:{escaped})" if literal.endswith("i") else escaped


def _range(low: str, high: str) -> str:
    a, b = _decode(low), _decode(high)
    if len(a) != 1 or len(b) != 1:
        raise _unsupported(f"range {low}..{high} is not between single characters")
    return f"[{_escape(a)}-{_escape(b)}]"


def _regex(literal: str) -> str:
    end = literal.rindex("/")
    body, flags = literal[1:end].replace("\\/", "/"), literal[end + 1 :]
    unknown = set(flags) - set("imsx")
    if unknown:
        raise _unsupported(f"regex flag {''.join(sorted(unknown))} in {literal}")
    return f"(?{flags}:{body})" if flags else f"(?:{body})"


def lark_to_regex(definition: str) -> str:
    """The regex (anchored by the caller: it is matched whole) accepting exactly the texts `definition`
    accepts. Raises `UnsupportedSchemaError` (param "tools") saying why when the grammar is not regular or
    uses what is not supported."""
    return _Converter(definition).regex()
