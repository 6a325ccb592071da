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

import xmltodict

from s3gateway.errors import MalformedXML

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def render(root: str, body: dict[str, Any] | None, *, namespace: bool = True) -> bytes:
    content: dict[str, Any] = {"@xmlns": S3_NS} if namespace else {}
    content.update(body or {})
    return xmltodict.unparse({root: content}, full_document=True).encode()


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
