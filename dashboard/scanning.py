"""Refuse secrets pasted into free text (notes, descriptions, values).

detect-secrets provides the maintained detectors; two rules of ours cover what it misses
here: Upstash REST tokens and Redis URLs carrying a password. Findings name the *kind* of
secret only — the matched text is never returned, logged or put in an error message.
"""

import functools
import re

from django.core.exceptions import ValidationError

# A valid 1Password reference is the safe way to mention a secret; remove it before scanning
# so that its vault/item names are never mistaken for tokens.
_REFERENCE = re.compile(r"op://[^\s\"'<>]+")
# Userinfo with a password: scheme://user:password@host (Redis, rediss, and any other URL).
_URL_WITH_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]*:[^\s/@]+@", re.I)
# Upstash REST tokens are long base64url strings starting with "A" (read-only ones "Ag");
# the key name often travels with them.
_UPSTASH_TOKEN = re.compile(r"(?<![A-Za-z0-9_+/=-])A[A-Za-z0-9_-]{3}[A-Za-z0-9_+/=-]{36,}")
_UPSTASH_ASSIGNMENT = re.compile(r"UPSTASH_REDIS_REST_TOKEN\s*[=:]\s*[\"']?[^\s\"'$]{8,}", re.I)
# `password = …`, `token: …` and bearer headers: a credential-named key followed by a value
# that is not a reference, a variable or a placeholder, and has a digit or symbol (so that
# prose like "token: rotated" passes).
_ASSIGNMENT = re.compile(
    r"\b(?:password|passwd|pwd|secret|token|api[_-]?key|auth[_-]?token|access[_-]?key)\s*[:=]\s*"
    r"[\"']?(?!op-reference|\$|<|\{|\[censored\])(?=[^\s\"']*[0-9!@#%^&*_+=/])[^\s\"']{6,}", re.I)
_BEARER = re.compile(r"\bBearer\s+[A-Za-z0-9._~+/-]{16,}", re.I)

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
    if _ASSIGNMENT.search(cleaned):
        kinds.add("credential assignment")
    if _BEARER.search(cleaned):
        kinds.add("bearer token")
    for token in _UPSTASH_TOKEN.findall(cleaned):
        if re.search(r"[a-z]", token) and re.search(r"[0-9]", token) and re.search(r"[A-Z].*[A-Z]", token[1:]):
            kinds.add("Upstash token")
    for line in cleaned.splitlines():
        kinds |= _detect_secrets_kinds(line)
    return sorted(kinds)


def validate_no_secret(value):
    """Validator for free-text fields: refuses text containing a secret, without echoing it."""
    kinds = find_secrets(value)
    if kinds:
        raise ValidationError(REFUSAL.format(kinds=", ".join(kinds)), code="pasted_secret")
