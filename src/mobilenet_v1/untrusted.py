"""Text from files the project did not write: bounded JSON parsing and printable strings.

Weights metadata, ONNX metadata and labels files come from outside and are read as
untrusted input. :func:`parse_json` refuses input that is too large or nested too deeply
with a one-line ``ValueError`` before ``json`` recurses (Python's parser recurses once
per nesting level, so 100000 nested brackets would raise ``RecursionError``);
:func:`printable` replaces the control characters of any string that will reach a
terminal or a log (escape sequences, carriage returns, line breaks, bidirectional
overrides, lone surrogates), keeping ordinary Unicode.

May import: nothing of the project.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "parse_json", "printable", "read_bounded"]

MAX_JSON_BYTES = 1 << 20  # 1 MiB: the largest metadata value we write (1001 class names) is ~30 KB
MAX_JSON_DEPTH = 16  # our metadata nests at most 3 levels

# JSON strings (possessive: no backtracking), then the brackets that remain outside them
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
# C0 controls, DEL, C1 controls, line/paragraph separators, bidirectional embeddings,
# overrides and isolates, and lone surrogates (which cannot even be encoded to UTF-8)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` outside JSON strings, without recursion."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(
    text: str | bytes, *, what: str, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """``json.loads(text)`` for untrusted ``text``, or a one-line ``ValueError`` naming ``what``.

    Refused before parsing: more than ``max_bytes`` bytes (UTF-8), nesting deeper than
    ``max_depth`` and bytes that are not UTF-8. The message quotes no content of the input.
    """
    if isinstance(text, bytes | bytearray):
        size = len(text)
        if size > max_bytes:
            raise ValueError(f"{what}: {size} bytes of JSON, more than the {max_bytes} allowed")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{what}: not UTF-8 text (byte {exc.start})") from None
    if not isinstance(text, str):
        raise ValueError(f"{what}: expected JSON text, got {type(text).__name__}")
    # a character is 1 to 4 UTF-8 bytes: count exactly only where it can matter
    if len(text) > max_bytes or (len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes):
        raise ValueError(f"{what}: more than {max_bytes} bytes of JSON")
    depth = _depth(text)
    if depth > max_depth:
        raise ValueError(f"{what}: JSON nested {depth} levels deep, more than the {max_depth} allowed")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError; a huge integer literal
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{what}: not valid JSON ({printable(reason)})") from None


def printable(text: object) -> str:
    """``text`` (``str()`` of anything else) with every control character replaced by its
    ``\\xNN``/``\\uNNNN`` escape, so that it prints as one line and changes nothing on
    the terminal; ordinary Unicode (accents, CJK, emoji) is kept."""
    text = text if isinstance(text, str) else str(text)
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def read_bounded(path: str | Path, what: str, max_bytes: int, identifier: bytes | None = None) -> bytes:
    """The bytes of the untrusted file ``path`` (a ``what``, e.g. "TFLite flatbuffer"):
    ``FileNotFoundError`` if it is missing, ``ValueError`` if it is larger than
    ``max_bytes`` (checked before reading) or lacks the file ``identifier`` that
    flatbuffers and ExecuTorch programs carry at bytes 4-8."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{path}: {size} bytes, more than the {max_bytes} a MobileNet V1 {what} can be")
    data = path.read_bytes()
    if identifier is not None and (len(data) < 8 or data[4:8] != identifier):
        article = "an" if what[0] in "AEIOUaeiou" else "a"
        raise ValueError(f"{path}: not {article} {what} (no {identifier.decode()!r} file identifier)")
    return data
