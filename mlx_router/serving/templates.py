"""Chat templates: choose the Jinja template a model's prompts are rendered with, and render OpenAI messages.

A model renders with its tokenizer's own chat template (through the tokenizer's `apply_chat_template`, so
multi-template tokenizers, `{% generation %}` tags and every transformers convention behave as they do for
the model's authors). A model without one, or whose config entry names a template, uses a built-in format
shipped in `mlx_router/templates/<name>.jinja`, or a Jinja template given inline in the config. Built-ins and
inline templates run in our own sandboxed Jinja environment, set up the way transformers sets up its own, so
no transformers internals are needed to render them.

Messages are normalised first, because OpenAI clients send shapes that templates written for HF datasets do
not expect: text-part lists, `tool_calls: null`, JSON-string arguments, the `developer` role.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib import resources
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mlx_router.conversation.normalize import join_text
from mlx_router.protocol.chat import RESERVED_TEMPLATE_KWARGS  # names the renderer itself passes a template

BUILTIN_TEMPLATES: tuple[str, ...] = ("llama3", "qwen", "chatml", "deepseek", "phi4", "gpt-oss", "generic")
FALLBACK_TEMPLATE = "generic"

_SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")
# Tool-call arguments reach templates as objects (as vLLM and mlx_lm's server hand them over): templates
# print them with `tojson` or walk them with `items()`, and a JSON string would come out encoded twice. The
# exception is a template that glues the JSON text into the prompt with `+` (DeepSeek V3/R1's own).
_TOJSON_ARGUMENTS = re.compile(r"arguments['\"\]]*\s*\|\s*tojson")
# A template that reads a message's content only as a list of parts (SmolVLM's indexes `content[0]['type']` and
# loops over the parts, and renders a plain string as nothing); it is handed every content as parts.
_PARTS_ONLY = re.compile(r"""(?:message\[['"]content['"]\]|message\.content)(?:\[0\]|\s*%\})""")
_PARTS_LOOP = re.compile(r"""for\s+\w+\s+in\s+(?:message\[['"]content['"]\]|message\.content)\s*%\}""")
_CONCAT_ARGUMENTS = re.compile(r"\+\s*[\w.\[\]'\"]*arguments['\"\]]*\s*(?:\+|\}\})")


class ChatTemplateError(ValueError):
    """Base of the chat-template errors; all of them are the caller's input, never a server fault."""


class UnknownTemplateError(ChatTemplateError):
    """A template name that is neither a built-in nor inline Jinja (raised at config validation)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"unknown chat template {name!r}; valid names: {', '.join(BUILTIN_TEMPLATES)} (or an inline Jinja template)"
        )
        self.name = name


class TemplateRenderError(ChatTemplateError):
    """The template rejected these messages or failed while rendering them (the API answers 400)."""


def builtin_template_source(name: str) -> str:
    """The Jinja source of the built-in template `name` (one of BUILTIN_TEMPLATES)."""
    if name not in BUILTIN_TEMPLATES:
        raise UnknownTemplateError(name)
    folder = resources.files("mlx_router").joinpath("templates")
    return folder.joinpath(f"{name}.jinja").read_text(encoding="utf-8")


def is_inline_template(template: str) -> bool:
    """Whether a configured `chat_template` value is Jinja text rather than a template name."""
    return "{%" in template or "{{" in template


class _GenerationTag(Extension):
    """Accepts transformers' `{% generation %}...{% endgeneration %}` blocks and renders their body as is."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return str(caller())


class _SafeNamespace(jinja2.utils.Namespace):
    """`namespace()` that refuses underscore names, which could reach interpreter internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 -- Namespace's own signature trick
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for key in attrs:
            _SafeNamespace._check(key)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, key: str, value: Any) -> None:
        _SafeNamespace._check(key)
        jinja2.utils.Namespace.__setitem__(self, key, value)

    @staticmethod
    def _check(key: object) -> None:
        if isinstance(key, str) and key.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {key!r} is not allowed")


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters; chat templates expect plain json.dumps output.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _make_dict(*args: Any, **kwargs: Any) -> dict[Any, Any]:
    return dict(*args, **kwargs)


def build_environment() -> ImmutableSandboxedEnvironment:
    """A sandboxed Jinja environment with the globals and filters HF chat templates rely on."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _SafeNamespace
    env.globals["dict"] = _make_dict
    return env


def _join_text_parts(parts: Sequence[Any]) -> str:
    return join_text(
        [str(part.get("text") or "") for part in parts if isinstance(part, Mapping) and part.get("type") == "text"]
    )


def wants_parts(source: str) -> bool:
    """Whether a template reads content only as a list of parts (it indexes or loops over it and never tests
    for a string)."""
    return "is string" not in source and bool(_PARTS_ONLY.search(source) or _PARTS_LOOP.search(source))


def _normalize_content(content: Any, keep_media: bool, parts: bool = False) -> Any:
    if parts:  # every content as a list of parts, text kept apart as sent
        if isinstance(content, str):
            return [{"type": "text", "text": content}] if content else []
        if isinstance(content, list):
            return [dict(part) if isinstance(part, Mapping) else part for part in content]
        return content
    if not isinstance(content, list):
        return content
    text_only = all(isinstance(part, Mapping) and part.get("type") == "text" for part in content)
    if text_only or not keep_media:
        return _join_text_parts(content)
    # Media parts stay for templates that place image tokens themselves (vision models).
    return [dict(part) if isinstance(part, Mapping) else part for part in content]


def _normalize_tool_call(call: Mapping[str, Any], parse_arguments: bool) -> dict[str, Any]:
    out = {key: value for key, value in call.items() if value is not None}
    function = out.get("function")
    if isinstance(function, Mapping):
        function = dict(function)
        arguments = function.get("arguments")
        if parse_arguments and isinstance(arguments, str):
            try:
                parsed = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                parsed = None  # not JSON: the template prints the text as the client sent it
            if isinstance(parsed, dict):
                function["arguments"] = parsed
        out["function"] = function
    return out


def _as_dict(item: Any, index: int, where: str = "messages") -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    dump = getattr(item, "model_dump", None)
    if callable(dump):  # pydantic wire types
        return dict(dump(exclude_none=True))
    raise TemplateRenderError(f"{where}[{index}] must be an object")


def normalize_messages(
    messages: Sequence[Any], *, parse_arguments: bool, keep_media: bool, parts: bool = False
) -> list[dict[str, Any]]:
    """Copies of `messages` in the shape chat templates expect; the caller's objects are not changed.

    `parse_arguments` turns JSON-string tool-call arguments into objects (for templates that `tojson` them);
    `keep_media` keeps content lists that hold non-text parts, otherwise only their text is kept; `parts` hands
    every content as a list of parts (templates that read nothing else, `wants_parts`).
    """
    result = []
    for index, raw in enumerate(messages):
        message = _as_dict(raw, index)
        if not isinstance(message.get("role"), str):
            raise TemplateRenderError(f"messages[{index}].role must be a string")
        # None-valued keys break templates that test `is defined` and then use the value (transformers 5
        # drops them itself). A null content becomes "": templates that glue `'...' + content` (DeepSeek's)
        # would fail on a missing key, and every template renders "" as it renders null.
        message = {k: v for k, v in message.items() if v is not None}
        message.setdefault("content", "")
        if message["role"] == "developer":
            message["role"] = "system"  # OpenAI's newer name; templates know only "system"
        message["content"] = _normalize_content(message["content"], keep_media, parts)
        if "reasoning_content" not in message:
            for alias in ("reasoning", "thinking"):
                if isinstance(message.get(alias), str):
                    message["reasoning_content"] = message[alias]
                    break
        calls = message.pop("tool_calls", None)
        if calls:
            message["tool_calls"] = [
                _normalize_tool_call(c, parse_arguments) if isinstance(c, Mapping) else c for c in calls
            ]
        result.append(message)
    return result


def wants_parsed_arguments(source: str) -> bool:
    """Whether a template expects tool-call arguments as objects rather than as the client's JSON text."""
    return not (_CONCAT_ARGUMENTS.search(source) and not _TOJSON_ARGUMENTS.search(source))


def _tokenizer_template(hf_tokenizer: Any) -> str | None:
    template = getattr(hf_tokenizer, "chat_template", None)
    if isinstance(template, Mapping):  # several named templates: "default" is what plain chat uses
        template = template.get("default") or next(iter(template.values()), None)
    return template if isinstance(template, str) and template.strip() else None


def _all_tokenizer_templates(hf_tokenizer: Any) -> str:
    template = getattr(hf_tokenizer, "chat_template", None)
    if isinstance(template, Mapping):
        return "\n".join(str(value) for value in template.values())
    return str(template or "")


def _special_tokens(hf_tokenizer: Any) -> dict[str, str]:
    tokens = {}
    for name in _SPECIAL_TOKEN_NAMES:
        value = getattr(hf_tokenizer, name, None)
        if isinstance(value, str):
            tokens[name] = value
    return tokens


class ChatTemplateRenderer:
    """Renders OpenAI-style messages into a prompt string for one model.

    `template` None uses the tokenizer's own template, or `generic` when it has none; a name from
    BUILTIN_TEMPLATES uses that built-in; text containing `{%` or `{{` is an inline Jinja template.
    Anything else raises UnknownTemplateError, and inline Jinja that does not compile raises
    TemplateRenderError, so both surface at start-up rather than on the first request.
    """

    def __init__(self, hf_tokenizer: Any, template: str | None = None) -> None:
        self._tokenizer = hf_tokenizer
        self._special = _special_tokens(hf_tokenizer)
        own = _tokenizer_template(hf_tokenizer) if template is None else None
        if own is not None:
            self._source, self._origin = own, "tokenizer"
            self._parse_arguments = wants_parsed_arguments(_all_tokenizer_templates(hf_tokenizer))
        else:
            if template is None:
                template = FALLBACK_TEMPLATE
            if template in BUILTIN_TEMPLATES:
                self._source, self._origin = builtin_template_source(template), f"builtin:{template}"
            elif is_inline_template(template):
                self._source, self._origin = template, "inline"
            else:
                raise UnknownTemplateError(template)
            self._parse_arguments = wants_parsed_arguments(self._source)
        self._parts = wants_parts(self._source)
        # The tokenizer's own template goes through its apply_chat_template when it has one.
        self._use_tokenizer = self._origin == "tokenizer" and callable(
            getattr(hf_tokenizer, "apply_chat_template", None)
        )
        self._compiled: jinja2.Template | None = None
        if not self._use_tokenizer:
            try:
                self._compiled = build_environment().from_string(self._source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateRenderError(
                    f"chat template ({self._origin}) does not compile: line {exc.lineno}: {exc.message}"
                ) from exc

    @property
    def source(self) -> str:
        """The Jinja text in use."""
        return self._source

    @property
    def origin(self) -> str:
        """Where the template came from: "tokenizer", "builtin:<name>" or "inline"."""
        return self._origin

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        """The prompt text for `messages` (and `tools`); raises TemplateRenderError on any template failure.

        `template_kwargs` reach the template as variables (`enable_thinking`, `reasoning_effort`, ...).
        """
        reserved = sorted(set(template_kwargs) & RESERVED_TEMPLATE_KWARGS)
        if reserved:
            raise TemplateRenderError(f"chat_template_kwargs may not set {', '.join(reserved)}")
        chat = normalize_messages(
            messages,
            parse_arguments=self._parse_arguments,
            keep_media=self._origin == "tokenizer",
            parts=self._parts,
        )
        tool_list = [_as_dict(tool, index, "tools") for index, tool in enumerate(tools)] if tools else None
        try:
            if self._use_tokenizer:
                text = self._tokenizer.apply_chat_template(
                    chat,
                    tools=tool_list,
                    add_generation_prompt=add_generation_prompt,
                    tokenize=False,
                    **template_kwargs,
                )
            else:
                assert self._compiled is not None
                text = self._compiled.render(
                    messages=chat,
                    tools=tool_list,
                    add_generation_prompt=add_generation_prompt,
                    **{**template_kwargs, **self._special},
                )
        # A chat template is a program from the model's authors or the config: whatever it raises is a
        # property of this request's messages, so it becomes a 400 with the template's own words.
        except Exception as exc:  # noqa: BLE001
            raise TemplateRenderError(f"chat template ({self._origin}) failed: {exc}") from exc
        if not isinstance(text, str):
            raise TemplateRenderError(f"chat template ({self._origin}) did not produce text")
        return text
