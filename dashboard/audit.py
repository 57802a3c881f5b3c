"""The one way to write the audit log: `record(...)`, inside the change's transaction."""

import json
import re
from contextvars import ContextVar

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.forms.models import model_to_dict

from dashboard.models import AuditEntry
from dashboard import sso
from dashboard.scanning import find_secrets

CENSORED = "[censored]"
# Field names whose values never reach the audit log.
# (A field named just `secret` is a link to a Secret record, not a secret value.)
_SENSITIVE_NAME = re.compile(r"password|passwd|token|secret_(key|value)|_secret$|credential|private|api_?key|^value$", re.I)
# The userinfo of any URL (scheme://user:password@host, https://TOKEN@host): a password is
# always dropped (the user is kept); a user alone is kept only when it is a short plain name.
_URL_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)([^\s/?#@]*)@", re.I)
_PLAIN_USER = re.compile(r"[A-Za-z0-9._-]{1,32}")

# The server's id of the request being served (the audit group), and the X-Request-ID its
# client sent, if sane (dashboard.middleware.RequestIdMiddleware): for records written
# without the request at hand.
current_request_id = ContextVar("current_request_id", default="")
current_client_request_id = ContextVar("current_client_request_id", default="")


def censor(data):
    """A copy of `data` with sensitive values replaced by CENSORED."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if _SENSITIVE_NAME.search(str(key)) and value not in (None, "", [], {}):
                out[key] = CENSORED
            else:
                out[key] = censor(value)
        return out
    if isinstance(data, (list, tuple)):
        return [censor(item) for item in data]
    if isinstance(data, str):
        return _URL_USERINFO.sub(_censor_userinfo, data)
    return data


def _censor_userinfo(match):
    scheme, userinfo = match.groups()
    user, has_password, _ = userinfo.partition(":")
    if not _PLAIN_USER.fullmatch(user) or find_secrets(user):
        return f"{scheme}{CENSORED}@"
    return f"{scheme}{user}:{CENSORED}@" if has_password else f"{scheme}{user}@"


def snapshot(instance, fields=None, exclude=None):
    """A JSON-ready dict of a model instance's fields, for `before`/`after`."""
    data = model_to_dict(instance, fields=fields, exclude=exclude)
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder, default=str))


def _jsonable(value):
    if value is None:
        return None
    return censor(json.loads(json.dumps(value, cls=DjangoJSONEncoder, default=str)))


def record(*, action, target=None, target_type="", target_id="", target_label="",
           before=None, after=None, note="", request=None, actor=None, actor_label="", source=None):
    """Append one audit entry. Must run inside the transaction that makes the change.

    The actor comes from `request.user` on the web, or from `actor`/`actor_label` for
    commands and tasks. `target` (a model instance) fills the target fields.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("audit.record() must be called inside transaction.atomic() with the change.")
    remote_addr = None
    request_id, client_request_id = current_request_id.get(), current_client_request_id.get()
    if request is not None:
        if actor is None and request.user.is_authenticated:
            actor = request.user
        remote_addr = request.META.get("REMOTE_ADDR") or None
        request_id = getattr(request, "request_id", request_id)
        client_request_id = getattr(request, "client_request_id", client_request_id)
        source = source or "web"
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or str(target.pk)
        target_label = target_label or str(target)
    if actor is not None and not actor_label:
        actor_label = actor.get_username()
        # Signed in through the identity provider: the entry names its subject and email.
        identity = getattr(request, "session", {}).get(sso.SESSION_KEY) if request is not None else None
        if identity and request.user.is_authenticated and request.user.pk == actor.pk:
            actor_label = sso.actor_label(actor_label, identity)
    return AuditEntry.objects.create(
        actor=actor,
        actor_label=actor_label or "system",
        source=source or "system",
        action=action,
        target_type=target_type,
        target_id=str(target_id)[:255],
        target_label=str(target_label)[:500],
        before=_jsonable(before),
        after=_jsonable(after),
        note=censor(note or ""),
        request_id=request_id,
        client_request_id=client_request_id,
        remote_addr=remote_addr,
    )
