"""SigV4 primitives against the worked examples in AWS's documentation."""

from __future__ import annotations

import hashlib

from wire.sigv4 import sign, signing_key, string_to_sign, uri_encode

# "Deriving the signing key" (AWS General Reference, Signature Version 4 examples).
DOC_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def test_signing_key_matches_the_documented_example() -> None:
    key = signing_key(DOC_SECRET, "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_get_object_example_of_the_s3_documentation() -> None:
    """"Example: GET Object" (Amazon S3 API reference, Signature Calculations for
    the Authorization Header): the canonical request, string to sign and
    signature it lists."""
    canonical = "\n".join([
        "GET", "/test.txt", "",
        "host:examplebucket.s3.amazonaws.com", "range:bytes=0-9",
        "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "x-amz-date:20130524T000000Z", "",
        "host;range;x-amz-content-sha256;x-amz-date",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ])
    sts = string_to_sign("20130524T000000Z", "20130524/us-east-1/s3/aws4_request", canonical)
    assert sts.splitlines()[-1] == "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    # The S3 examples' secret differs from the IAM one by one character.
    key = signing_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1")
    assert sign(key, sts) == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"


def test_uri_encoding_keeps_only_unreserved_characters() -> None:
    assert uri_encode("a b/c~d_e-f.g*h", keep_slash=True) == "a%20b/c~d_e-f.g%2Ah"
    assert uri_encode("a/b", keep_slash=False) == "a%2Fb"
    assert uri_encode("é".encode(), keep_slash=False) == "%C3%A9"
    assert hashlib.sha256(b"").hexdigest().startswith("e3b0")
