"""S3 XML documents in and out.

xmltodict over expat with entity expansion disabled: request documents are
small (bounded by `s3.max_xml_body_bytes`) and read whole; responses are built
from plain dicts, one element per key, lists for repeated elements.
"""

from __future__ import annotations

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
        doc = xmltodict.parse(data, disable_entities=True, process_namespaces=False)
    except (xml.parsers.expat.ExpatError, ValueError, TypeError):
        raise MalformedXML() from None
    if not isinstance(doc, dict) or len(doc) != 1:
        raise MalformedXML()
    (name, content), = doc.items()
    if name.split(":")[-1] != root:
        raise MalformedXML()
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise MalformedXML()
    return content


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def text(value: Any) -> str:
    """The text of a simple element (xmltodict gives None for <a/>)."""
    if value is None:
        return ""
    if isinstance(value, dict):
        inner = value.get("#text")
        if inner is None:
            raise MalformedXML()
        return str(inner)
    if isinstance(value, list):
        raise MalformedXML()
    return str(value)


def iso8601(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
