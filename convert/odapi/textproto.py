"""A reader for protobuf text format, enough for OD API ``pipeline.config`` and
``label_map.pbtxt`` files without their ``.proto`` definitions.

``google.protobuf.text_format`` needs the message classes, which ship only
with the OD API package (not installable here). The text format itself is
small: ``name: scalar``, ``name { ... }`` or ``name < ... >`` (the colon is
optional before a message), ``[a, b]`` list shorthand for repeated scalars,
``#`` comments, quoted strings with C escapes, and ``;``/``,`` as optional
separators. Every field is read as a list (any field may repeat); ``Message``
gives typed access to the first value or all of them.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

_TOKEN = re.compile(r"""
    (?P<space>[\s,;]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<punct>[{}<>\[\]:])
  | (?P<word>[^\s{}<>\[\]:,;"'#]+)
""", re.VERBOSE)


class TextProtoError(ValueError):
    """The text is not valid protobuf text format; the message names the line."""


@dataclass
class Message:
    """A parsed message: field name -> list of values (str/int/float/bool, or Message)."""

    fields: dict[str, list] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.fields

    def all(self, name: str) -> list:
        return self.fields.get(name, [])

    def get(self, name: str, default=None):
        values = self.fields.get(name)
        return values[0] if values else default

    def message(self, name: str) -> "Message":
        """The sub-message ``name``, or an empty one (protobuf's default instance)."""
        value = self.get(name)
        return value if isinstance(value, Message) else Message()

    def path(self, dotted: str, default=None):
        """``get`` along a dotted path of sub-messages, e.g. ``"model.ssd.num_classes"``."""
        *messages, last = dotted.split(".")
        node = self
        for name in messages:
            node = node.message(name)
        return node.get(last, default)

    def oneof(self, *names: str) -> tuple[str | None, "Message"]:
        """The first of ``names`` that is set, with its message (a proto ``oneof``)."""
        for name in names:
            if isinstance(self.get(name), Message):
                return name, self.get(name)
        return None, Message()

    def set_names(self) -> list[str]:
        return list(self.fields)


def _scalar(text: str, quoted: bool):
    if quoted:
        return ast.literal_eval(text)
    lowered = text.lower()
    if lowered in ("true", "t"):
        return True
    if lowered in ("false", "f"):
        return False
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return float(lowered.rstrip("f") if lowered not in ("inf", "-inf", "nan") else lowered)
    except ValueError:
        return text  # an enum value such as SIGMOID


def parse(text: str, source: str = "<text>") -> Message:
    """Parses protobuf text format; raises ``TextProtoError`` naming ``source`` and the line."""
    tokens: list[tuple[str, str, int]] = []
    line = 1
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise TextProtoError(f"{source}: line {line}: unexpected character {text[position]!r}")
        kind = match.lastgroup
        if kind != "space":
            tokens.append((kind, match.group(), line))
        line += match.group().count("\n")
        position = match.end()
    index = 0

    def error(message: str) -> TextProtoError:
        at = tokens[index][2] if index < len(tokens) else line
        return TextProtoError(f"{source}: line {at}: {message}")

    def take(expected: str | None = None) -> tuple[str, str, int]:
        nonlocal index
        if index >= len(tokens):
            raise error(f"unexpected end of file{f', expected {expected!r}' if expected else ''}")
        token = tokens[index]
        if expected is not None and token[1] != expected:
            raise error(f"expected {expected!r}, found {token[1]!r}")
        index += 1
        return token

    def value():
        kind, text_value, _ = take()
        if kind == "string":
            parts = [_scalar(text_value, True)]
            while index < len(tokens) and tokens[index][0] == "string":  # adjacent strings concatenate
                parts.append(_scalar(take()[1], True))
            return "".join(parts)
        if kind == "word":
            return _scalar(text_value, False)
        raise error(f"expected a value, found {text_value!r}")

    def message(closing: str | None) -> Message:
        result = Message()
        while True:
            if index >= len(tokens):
                if closing is None:
                    return result
                raise error(f"unexpected end of file, expected {closing!r}")
            kind, name, _ = tokens[index]
            if closing is not None and name == closing:
                take()
                return result
            if kind != "word":
                raise error(f"expected a field name, found {name!r}")
            take()
            values = result.fields.setdefault(name, [])
            has_colon = index < len(tokens) and tokens[index][1] == ":"
            if has_colon:
                take(":")
            nxt = tokens[index][1] if index < len(tokens) else None
            if nxt in ("{", "<"):
                take()
                values.append(message("}" if nxt == "{" else ">"))
            elif nxt == "[" and has_colon:
                take("[")
                while tokens[index][1] != "]" if index < len(tokens) else False:
                    if tokens[index][1] in ("{", "<"):
                        opening = take()[1]
                        values.append(message("}" if opening == "{" else ">"))
                    else:
                        values.append(value())
                take("]")
            elif has_colon:
                values.append(value())
            else:
                raise error(f"expected ':' or '{{' after {name!r}")

    return message(None)


def read(path: str | Path) -> Message:
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise TextProtoError(f"{path}: not a text file (expected protobuf text format)") from None
    return parse(text, str(path))
