"""Remote URLs as people see them: which carry credentials, and how every message shows one.

A credential in a URL would end up in git (pivot.toml) and in every message that names the
remote, so SPEC §8 makes it a config error; credentials come from the environment or a
profile in ``.pivotbuild/config.local.toml``. Two functions:

- ``credential_problem(url)``: why a URL carries a secret (a password in its userinfo, a secret
  in its query or fragment, an AWS access key id anywhere), or None. It never quotes the URL.
- ``redact_url(url)`` / ``redact_text(text)``: the URL (or every URL inside a message) with
  its userinfo replaced by ``***`` and the values of secret-looking query keys by ``***``.

A user name alone (``sftp://deploy@host/...``) is no secret and is accepted, but it is still
never printed: every message shows the redacted form.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

MASK = "***"

# Words that make a query key's value a secret (``secret_key``, ``X-Amz-Security-Token``,
# ``sig``, ``apiKey``, ``password``...), matched per word of the key.
_SECRET_WORDS = {
    "secret", "password", "passwd", "pwd", "pass", "token", "signature", "sig", "credential",
    "credentials", "key", "apikey", "auth", "authorization", "sas",
}
# An AWS access key id (long-term AKIA…, temporary ASIA…): a credential wherever it appears.
_AWS_KEY_ID_RE = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
# Schemes whose host is a bucket: an '@' anywhere before the query can only be userinfo
# (bucket names cannot hold one) that urlsplit missed because the secret holds a '/'.
_BUCKET_SCHEMES = {"s3", "s3a", "s3n", "gs", "gcs", "oss"}
# ``host:port/path``: what comes before an '@' in the path when it is no userinfo.
_HOST_PORT_PATH_RE = re.compile(r"[^/:]*:\d*(?:/.*)?")
# Any scheme://userinfo@ inside free text (exception messages quote URLs too).
_USERINFO_IN_TEXT_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s@'\"<>]*@")


def _is_secret_key(key: str) -> bool:
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key.strip()).lower()
    return any(word in _SECRET_WORDS for word in re.split(r"[^a-z0-9]+", words))


def _userinfo_end(scheme: str, location: str) -> int:
    """Index of the '@' that ends the userinfo in ``location`` (the URL after ``://``, without
    query and fragment), or -1. For ``scheme://user:se/cret@host`` the secret's '/' ends the
    host part early, so an '@' after a ``user:…`` head that is no ``host:port`` counts too."""
    if "@" not in location:
        return -1
    if scheme.lower() in _BUCKET_SCHEMES:
        return location.rfind("@")
    slash = location.find("/")
    at = location.rfind("@", 0, slash if slash >= 0 else len(location))
    if at >= 0:
        return at
    head = location.split("@", 1)[0]
    if ":" in head and not _HOST_PORT_PATH_RE.fullmatch(head):
        return location.find("@")
    return -1


def credential_problem(url: str) -> str | None:
    """Why ``url`` carries credentials, without quoting any of it; None if it does not."""
    if _AWS_KEY_ID_RE.search(url):
        return "holds an AWS access key id"
    if "://" not in url:
        return None  # a local path
    scheme, rest = url.split("://", 1)
    location, _, fragment = rest.partition("#")
    location, _, query = location.partition("?")
    at = _userinfo_end(scheme, location)
    if at >= 0:
        if ":" in location[:at]:
            return "holds a password (user:password@)"
        if scheme.lower() in _BUCKET_SCHEMES:
            return "holds credentials before the bucket name (…@bucket)"
    for part in (query, fragment):
        for key, _value in parse_qsl(part, keep_blank_values=True):
            if _is_secret_key(key):
                return "holds a secret in its query string"  # the key itself may be one
    return None


def _redact_query(query: str) -> str:
    if not query:
        return query
    pieces = []
    for piece in query.split("&"):
        key, sep, value = piece.partition("=")
        pieces.append(f"{key}={MASK}" if sep and value and _is_secret_key(key) else piece)
    return "&".join(pieces)


def redact_url(url: str) -> str:
    """``url`` as a message may show it: no userinfo, no secret query value, no key id."""
    text = _AWS_KEY_ID_RE.sub(MASK, url)
    if "://" not in text:
        return text
    scheme, rest = text.split("://", 1)
    location, hsep, fragment = rest.partition("#")
    location, qsep, query = location.partition("?")
    at = _userinfo_end(scheme, location)
    if at >= 0:
        location = MASK + location[at:]
    out = f"{scheme}://{location}"
    if qsep:
        out += "?" + _redact_query(query)
    if hsep:
        out += "#" + _redact_query(fragment)
    return out


def redact_text(text: str) -> str:
    """Every ``scheme://userinfo@`` and AWS access key id in a message, masked."""
    if "@" not in text and "AKIA" not in text and "ASIA" not in text:
        return text
    text = _USERINFO_IN_TEXT_RE.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    return _AWS_KEY_ID_RE.sub(MASK, text)


__all__ = ["MASK", "credential_problem", "redact_text", "redact_url"]
