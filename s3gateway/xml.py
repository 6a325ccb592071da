"""S3 XML documents in and out.

xmltodict over expat with entity expansion disabled: request documents are
small (bounded by `s3.max_xml_body_bytes`) and read whole; responses are built
from plain dicts, one element per key, lists for repeated elements.
"""

from __future__ import annotations

import re
import xml.parsers.expat
from datetime import datetime, timezone
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import xmltodict  # parsing requests

from s3gateway.errors import MalformedXML

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


# Written as numeric character references, as S3 does: characters XML 1.0
# cannot carry raw (C0 controls in keys), and CR, which a parser would read
# back as LF. A client that must get such keys back exactly asks for
# encoding-type=url; the references at least keep the document unambiguous.
_NEEDS_CHAR_REF = re.compile("[^\t\n\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def render(root: str, body: dict[str, Any] | None, *, namespace: bool = True) -> bytes:
    """An S3 response document: dict keys are elements (lists repeat them, None
    is empty), "@name" keys attributes, "#text" an element's text. Written
    directly rather than through xmltodict's SAX writer, which took most of a
    1000-entry listing's time; the output is byte-for-byte what
    `xmltodict.unparse` gives (a unit test holds the two together)."""
    out = ['<?xml version="1.0" encoding="utf-8"?>\n']
    _emit(out, root, {"@xmlns": S3_NS, **(body or {})} if namespace else (body or {}))
    return _NEEDS_CHAR_REF.sub(lambda m: f"&#x{ord(m.group()):X};", "".join(out)).encode()


def _emit(out: list[str], name: str, value: Any) -> None:
    if isinstance(value, list):
        for v in value:
            _emit(out, name, v)
        return
    if not isinstance(value, dict):
        out.append(f"<{name}>{_text(value)}</{name}>")
        return
    attrs = "".join(f" {k[1:]}={quoteattr(_plain(v))}" for k, v in value.items() if k.startswith("@"))
    out.append(f"<{name}{attrs}>")
    for k, v in value.items():
        if k == "#text":
            out.append(_text(v))
        elif not k.startswith("@"):
            _emit(out, k, v)
    out.append(f"</{name}>")


def _text(value: Any) -> str:
    return escape(_plain(value))


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse(data: bytes, root: str) -> dict[str, Any]:
    """The children of `root`, or MalformedXML."""
    try:
        # Text is kept exactly (keys and tag values may begin or end with spaces);
        # the whitespace that only lays out elements is dropped by _drop_layout.
        doc = xmltodict.parse(data, disable_entities=True, process_namespaces=False, strip_whitespace=False)
    except (xml.parsers.expat.ExpatError, ValueError, TypeError):
        raise MalformedXML() from None
    if not isinstance(doc, dict) or len(doc) != 1:
        raise MalformedXML()
    (name, content), = doc.items()
    if name.split(":")[-1] != root:
        raise MalformedXML()
    content = _drop_layout(content)
    if content is None or (isinstance(content, str) and not content.strip()):
        return {}
    if not isinstance(content, dict):
        raise MalformedXML()
    return content


def _drop_layout(node: Any) -> Any:
    """Remove whitespace-only text from elements that have child elements."""
    if isinstance(node, list):
        return [_drop_layout(n) for n in node]
    if not isinstance(node, dict):
        return node
    has_children = any(not k.startswith(("@", "#")) for k in node)
    return {
        k: _drop_layout(v) for k, v in node.items()
        if not (k == "#text" and has_children and isinstance(v, str) and not v.strip())
    }


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def text(value: Any, *, exact: bool = False) -> str:
    """The text of a simple element (xmltodict gives None for <a/>), stripped
    unless `exact` (object keys and tag values keep their spaces)."""
    if value is None:
        return ""
    if isinstance(value, dict):
        inner = value.get("#text")
        if inner is None:
            raise MalformedXML()
        value = inner
    if isinstance(value, list):
        raise MalformedXML()
    return str(value) if exact else str(value).strip()


# Characters XML 1.0 cannot carry at all, not even as character references.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(value: str) -> str:
    """`value` with characters XML 1.0 cannot carry replaced by U+FFFD, for
    echoing client input (keys, arguments) in error documents."""
    return _XML_INVALID.sub("\ufffd", value)


def iso8601(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
