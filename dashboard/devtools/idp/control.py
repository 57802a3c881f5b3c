"""The demo provider's control endpoint, for `make run` and the tests: register the dashboard
as a client, create people with their groups, change their groups, end their sessions here.
Loopback only, and only with the control token the process was started with."""

import hmac
import json
import os

from django.contrib.auth.models import Group, User
from django.contrib.sessions.models import Session
from django.http import HttpResponseForbidden, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from oidc_provider.models import Client, ResponseType


def _client(client_id, client_secret, redirect_uris):
    client, _ = Client.objects.get_or_create(client_id=client_id, defaults={"name": "Continuity dashboard"})
    client.client_secret, client.client_type = client_secret, "confidential"
    client.redirect_uris = list(redirect_uris)
    client.require_consent, client.reuse_consent, client.jwt_alg = False, True, "RS256"
    client.save()
    client.response_types.set(ResponseType.objects.filter(value="code"))
    return {"client_id": client.client_id}


def _user(username, password=None, email="", groups=()):
    user, _ = User.objects.get_or_create(username=username)
    if password:
        user.set_password(password)
    user.email = email or user.email
    user.save()
    user.groups.set([Group.objects.get_or_create(name=name)[0] for name in groups])
    return {"username": username, "groups": sorted(groups)}


def _end_sessions(username):
    user = User.objects.get(username=username)
    ended = [s.pk for s in Session.objects.all() if s.get_decoded().get("_auth_user_id") == str(user.pk)]
    Session.objects.filter(pk__in=ended).delete()
    return {"ended": len(ended)}


ACTIONS = {"client": _client, "user": _user, "end_sessions": _end_sessions}


@csrf_exempt
@require_POST
def control(request):
    token = os.environ.get("IDP_CONTROL_TOKEN", "")
    given = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        return HttpResponseForbidden("control token required\n")
    body = json.loads(request.body)
    action = ACTIONS[body.pop("action")]
    return JsonResponse(action(**body))
