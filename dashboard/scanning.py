"""Refuse secrets pasted into free text (notes, descriptions, values).

detect-secrets provides the maintained detectors; rules of ours cover what it misses here:
Upstash REST tokens, URLs carrying a password, `Authorization: Basic`, `redis-cli -a`,
`password=` values and credentials in a query string. Findings name the *kind* of secret
only — the matched text is never returned, logged or put in an error message.
"""

import base64
import binascii
import functools
import re

from django.core.exceptions import ValidationError

# A 1Password reference (op://vault/item/field?attribute=…) is the safe way to mention a
# secret. It is taken out of the text so that its slashes and names are not read as one long
# token, and each of its parts is scanned on its own: a token pasted as a vault, item or field
# name is still a token.
_REFERENCE = re.compile(r"\bop://([^\s\"'<>]*)", re.I)
_REFERENCE_SEPARATORS = re.compile(r"[/?&=#]")
# Userinfo with a password: scheme://user:password@host (Redis, rediss, and any other URL).
_URL_WITH_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]*:[^\s/@]+@", re.I)
# Upstash REST tokens are long base64url strings starting with "A" (read-only ones "Ag");
# the key name often travels with them.
_UPSTASH_TOKEN = re.compile(r"(?<![A-Za-z0-9_+/=-])A[A-Za-z0-9_-]{3}[A-Za-z0-9_+/=-]{36,}")
_UPSTASH_ASSIGNMENT = re.compile(r"UPSTASH_REDIS_REST_TOKEN\s*[=:]\s*[\"']?[^\s\"'$]{8,}", re.I)
# What stands in for a value without being one: a reference, a variable, a placeholder, a mask.
_PLACEHOLDER = r"(?!op-reference|\$|%|<|\{|\[censored\]|\*+(?:[\s\"'&]|$)|(?:true|false|none|null)\b)"
# `password = …`, `token: …` and bearer headers: a credential-named key followed by a value
# that is not a placeholder, and has a digit or symbol (so that prose like "token: rotated" passes).
_ASSIGNMENT = re.compile(
    r"\b(?:password|passwd|pwd|secret|token|api[_-]?key|auth[_-]?token|access[_-]?key)\s*[:=]\s*"
    rf"[\"']?{_PLACEHOLDER}(?=[^\s\"'&]*[0-9!@#%^*_+=/])[^\s\"'&]{{6,}}", re.I)
# `password=` takes any value, words included (`password=correct horse…`): "=" is not prose.
# Spaces after "=" only with spaces before it too ("password = x"), so "the password= field" passes.
_PASSWORD_VALUE = re.compile(
    rf"\b(?:password|passwd|passphrase|pwd)(?:\s+=\s+|\s*=)(?:\"{_PLACEHOLDER}[^\"]{{3,}}\"|'{_PLACEHOLDER}[^']{{3,}}'|"
    rf"{_PLACEHOLDER}[^\s\"'&;#]{{3,}})", re.I)
# A credential in a query string: ?password=…, &token=…
_QUERY_CREDENTIAL = re.compile(
    r"[?&;](?:pass|passwd|password|passphrase|pwd|secret|client_secret|token|access_token|auth_token|api_?key)"
    rf"={_PLACEHOLDER}[^&#\s\"']{{3,}}", re.I)
_BEARER = re.compile(r"\bBearer\s+[A-Za-z0-9._~+/-]{16,}", re.I)
# HTTP basic credentials: after `Authorization:` any value; elsewhere base64 of "user:password".
_BASIC_HEADER = re.compile(rf"\bAuthorization\s*[:=]\s*[\"']?Basic\s+{_PLACEHOLDER}[A-Za-z0-9+/=._~-]{{4,}}", re.I)
_BASIC = re.compile(r"\bBasic\s+([A-Za-z0-9+/]{6,}={0,2})(?![A-Za-z0-9+/=])", re.I)
# redis-cli's password on the command line (-a, --pass) or in its environment variable.
_REDIS_CLI = re.compile(
    rf"\bredis-cli\b[^\n|;&]*?\s(?:-a|--pass)\s+[\"']?{_PLACEHOLDER}[^\s\"']{{3,}}"
    rf"|\bREDISCLI_AUTH\s*=\s*[\"']?{_PLACEHOLDER}[^\s\"']{{3,}}")

# Entropy thresholds, re-checked against this app's text (see test_scanning): detect-secrets'
# defaults (base64 4.5, hex 3.0) hold, but only for tokens long enough to be credentials —
# shorter words in prose reach those entropies too.
BASE64_LIMIT, BASE64_MIN_LENGTH = 4.5, 20
HEX_LIMIT, HEX_MIN_LENGTH = 3.0, 32

_DETECTORS = (
    "AWSKeyDetector", "ArtifactoryDetector", "AzureStorageKeyDetector", "BasicAuthDetector",
    "DiscordBotTokenDetector", "GitHubTokenDetector", "GitLabTokenDetector", "JwtTokenDetector",
    "KeywordDetector", "MailchimpDetector", "NpmDetector", "OpenAIDetector", "PrivateKeyDetector",
    "PypiTokenDetector", "SendGridDetector", "SlackDetector", "SquareOAuthDetector", "StripeDetector",
    "TelegramBotTokenDetector", "TwilioKeyDetector",
)

REFUSAL = ("This looks like a secret ({kinds}). It was not saved and is not shown again. "
           "Record where the secret lives instead: a 1Password reference such as "
           "op://vault/item/field. If it was a real secret, mark it exposed and rotate it.")


@functools.lru_cache(maxsize=1)
def _plugins():
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.high_entropy_strings import (Base64HighEntropyString,
                                                             HexHighEntropyString)

    by_name = {cls.__name__: cls for cls in get_mapping_from_secret_type_to_class().values()}
    plugins = [by_name[name]() for name in _DETECTORS if name in by_name]
    entropy = [(Base64HighEntropyString(limit=BASE64_LIMIT), BASE64_MIN_LENGTH),
               (HexHighEntropyString(limit=HEX_LIMIT), HEX_MIN_LENGTH)]
    return plugins, entropy


def _detect_secrets_kinds(line):
    plugins, entropy = _plugins()
    kinds = set()
    for plugin in plugins:
        for found in plugin.analyze_line(filename="text", line=line, line_number=0) or ():
            kinds.add(found.type)
    for plugin, min_length in entropy:
        # Eager search finds unquoted tokens too; the limit is applied here, as
        # detect-secrets leaves it to the caller for ad-hoc strings.
        for found in plugin.analyze_line(filename="text", line=line, line_number=0, enable_eager_search=True) or ():
            value = found.secret_value or ""
            if len(value) >= min_length and plugin.calculate_shannon_entropy(value) > plugin.entropy_limit:
                kinds.add(found.type)
    return kinds


def _is_basic_credentials(token):
    """True when `token` is base64 of printable "user:password" (what follows `Basic `)."""
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


def _text_kinds(text):
    """Kinds found in `text`, whose op:// references are already replaced by a placeholder."""
    kinds = set()
    for pattern, kind in ((_ASSIGNMENT, "credential assignment"), (_PASSWORD_VALUE, "password assignment"),
                          (_QUERY_CREDENTIAL, "credential in a query string"), (_BEARER, "bearer token"),
                          (_BASIC_HEADER, "basic auth credentials"), (_REDIS_CLI, "redis-cli password")):
        if pattern.search(text):
            kinds.add(kind)
    if any(_is_basic_credentials(token) for token in _BASIC.findall(text)):
        kinds.add("basic auth credentials")
    for token in _UPSTASH_TOKEN.findall(text):
        if re.search(r"[a-z]", token) and re.search(r"[0-9]", token) and re.search(r"[A-Z].*[A-Z]", token[1:]):
            kinds.add("Upstash token")
    for line in text.splitlines():
        kinds |= _detect_secrets_kinds(line)
    return kinds


def reference_parts(text):
    """The parts (vault, item, section, field, query names and values) of every op:// reference
    in `text`, each to be scanned on its own."""
    return [part for body in _REFERENCE.findall(text) for part in _REFERENCE_SEPARATORS.split(body) if part]


def find_secrets(text):
    """Sorted kinds of secret found in `text` (empty when clean). Never the matched text."""
    if not text:
        return []
    kinds = set()
    if _URL_WITH_PASSWORD.search(text):
        kinds.add("URL with a password")
    if _UPSTASH_ASSIGNMENT.search(text):
        kinds.add("Upstash token")
    cleaned = _REFERENCE.sub("op-reference", text)
    cleaned = _URL_WITH_PASSWORD.sub("url-with-password@", cleaned)
    kinds |= _text_kinds(cleaned)
    for part in reference_parts(text):
        kinds |= _text_kinds(part)
    return sorted(kinds)


def validate_no_secret(value):
    """Validator for free-text fields: refuses text containing a secret, without echoing it."""
    kinds = find_secrets(value)
    if kinds:
        raise ValidationError(REFUSAL.format(kinds=", ".join(kinds)), code="pasted_secret")
