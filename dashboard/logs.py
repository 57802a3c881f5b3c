"""Log records as a log pipeline wants them, and never with a secret in them.

- `SecretFilter` runs the secret scanner (dashboard.scanning) over every record a handler
  emits, in every format: a line of the message, the traceback or the stack that looks like a
  secret is replaced by WITHHELD (naming the kind, never the text). So a secret that reaches a
  log call by mistake (an exception carrying a URL with its password, a token in a query
  string) is never written.
- `ContextFilter` puts the request id, the signed-in user, and a job's run id and database on
  each record (`bind`, the request id of dashboard.audit).
- `JsonFormatter` writes one JSON object per line (LOG_FORMAT=json): time, level, logger,
  message, request_id, user, run_id, database, and the Celery task and exception when there
  are any. Plain text stays the default (`settings.LOGGING`).

Web, worker and beat use the same handler: Django's LOGGING in the web process, and
`configure_celery_handlers` on the handlers Celery installs in the worker and beat.
"""

import json
import logging
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone

from dashboard.scanning import find_secrets

WITHHELD = "[withheld: looked like a secret ({kinds})]"
CONTEXT_FIELDS = ("request_id", "user", "run_id", "database")

# user, run_id and database of the request or task being served (request_id: dashboard.audit).
current_context = ContextVar("log_context", default=None)


def set_context(**fields):
    """Bind `fields` (user, run_id, database) for the records logged from here on in this
    thread or task; returns the token for `reset_context`."""
    merged = {**(current_context.get() or {}), **{k: v for k, v in fields.items() if v not in (None, "")}}
    return current_context.set(merged)


def reset_context(token):
    current_context.reset(token)


@contextmanager
def bind(**fields):
    """`set_context` for a block."""
    token = set_context(**fields)
    try:
        yield
    finally:
        reset_context(token)


def scrub(text):
    """`text` with every line the secret scanner flags replaced by WITHHELD. The whole text
    is scanned first: a clean text (nearly all of them) costs one scan."""
    if not text or not find_secrets(text):
        return text
    lines = []
    for line in text.split("\n"):
        kinds = find_secrets(line)
        lines.append(WITHHELD.format(kinds=", ".join(kinds)) if kinds else line)
    scrubbed = "\n".join(lines)
    # A secret split over lines (a PEM key) is flagged as a whole but by no single line.
    if find_secrets(scrubbed):
        return WITHHELD.format(kinds=", ".join(find_secrets(text)))
    return scrubbed


class SecretFilter(logging.Filter):
    """Scrubs the message (its arguments merged in), the traceback and the stack of each
    record. The record is changed in place, so every handler after this one, whatever its
    format, writes the scrubbed text."""

    def filter(self, record):
        if getattr(record, "_scrubbed", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is still logged, scrubbed
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = scrub(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        for field in ("user", "database"):  # request_id and run_id are the server's own
            value = getattr(record, field, None)
            if isinstance(value, str) and value:
                setattr(record, field, scrub(value))
        record._scrubbed = True
        return True


def _request_id():
    from django.apps import apps

    # LOGGING is configured before the apps load, and dashboard.audit imports models.
    if not apps.ready:
        return ""
    from dashboard.audit import current_request_id

    return current_request_id.get()


# URL names whose `pk` is a job run's id.
RUN_VIEWS = ("review_", "purge_")


def request_context(request):
    """{user, database, run_id} of a request: the signed-in user, and the database and job run
    its URL names. Never raises (a log line must not fail): what cannot be read is left out."""
    context = {}
    try:
        user = request.user
        context["user"] = user.get_username() if user.is_authenticated else ""
    except Exception:  # noqa: BLE001 - Postgres down: PostgresUnavailableMiddleware answers
        pass
    match = getattr(request, "resolver_match", None)
    if match is not None:
        name, kwargs = match.url_name or "", match.kwargs
        context["database"] = kwargs.get("database") or (kwargs.get("name") if name.startswith("database") else "")
        context["run_id"] = kwargs.get("pk") if name.startswith(RUN_VIEWS) else None
    return context


class ContextFilter(logging.Filter):
    """Adds request_id, user, run_id and database (empty when unknown) to each record: from
    the request a record carries (Django logs 4xx/5xx answers after the middlewares are done),
    else from what the request or task being served bound."""

    def filter(self, record):
        context = current_context.get() or {}
        request = getattr(record, "request", None)
        if request is not None and hasattr(request, "request_id"):
            record.request_id = request.request_id
            context = {**context, **{k: v for k, v in request_context(request).items() if v not in (None, "")}}
        if not getattr(record, "request_id", ""):
            record.request_id = _request_id()
        for field in ("user", "run_id", "database"):
            if not getattr(record, field, ""):
                setattr(record, field, context.get(field, ""))
        return True


def _task():
    """(name, id) of the Celery task running in this thread, or ("", "")."""
    from celery import current_task

    if not current_task or not getattr(current_task.request, "id", None):
        return "", ""
    return current_task.name or "", current_task.request.id


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields without a value are left out."""

    def format(self, record):
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, "")
            if value not in ("", None):
                entry[field] = value if isinstance(value, (int, float)) else str(value)
        task, task_id = _task()
        if task:
            entry["task"], entry["task_id"] = task, task_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_celery_handlers(logger, log_format):
    """The worker's and beat's handlers (Celery replaces Django's on the root logger and adds
    its own to the task logger): the same filters, and the JSON format when asked. Connected
    to Celery's after_setup_logger and after_setup_task_logger (dashboard.celery)."""
    for handler in logger.handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
            handler.addFilter(SecretFilter())
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
