"""Structured logs (dashboard.logs): JSON lines with the request and job context, and the
secret scanner over every record, through the handlers the settings and Celery configure."""

import copy
import io
import json
import logging
import logging.config
import os
import subprocess
import sys

import pytest
from django.conf import settings

from dashboard import logs

# An Upstash-shaped REST token and a Redis URL with its password: what must never reach a log.
TOKEN = "AYNgASQgN2M4ZjFkNWQtYWJjZC00ZWY5LWE3ZTItYjk3ZDU2Y2U4MWQ0OTc2"
URL = "rediss://default:s3cr3t-Pa55word-9f8e7d@eu1-lucia.upstash.io:6379"


@pytest.fixture
def configured():
    """The settings' LOGGING, applied for real with dictConfig, its console writing to a
    buffer; `configured(format)` returns the buffer. The test run's logging is restored after."""
    streams = []

    def configure(log_format):
        config = copy.deepcopy(settings.LOGGING)
        stream = io.StringIO()
        config["handlers"]["console"].update(formatter=log_format, stream=stream)
        logging.config.dictConfig(config)
        streams.append(stream)
        return stream

    yield configure
    logging.config.dictConfig(settings.LOGGING)


def _lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_it_writes_a_json_line_with_the_request_id_and_the_user(configured, viewer_client):
    stream = configured("json")
    response = viewer_client.get("/no-such-page/")
    assert response.status_code == 404
    [line] = [entry for entry in _lines(stream) if entry["logger"] == "django.request"]
    assert line["level"] == "WARNING" and line["message"] == "Not Found: /no-such-page/"
    assert line["request_id"] == response["X-Request-ID"] and len(line["request_id"]) == 32
    assert line["user"] == "vera"
    assert line["time"].endswith("+00:00") and "T" in line["time"]
    assert "run_id" not in line and "database" not in line


def test_the_database_and_run_a_url_names_are_on_its_lines(configured, viewer_client, lucia):
    stream = configured("json")
    viewer_client.get("/keyspace/lucia/key/not-a-token!/")
    lines = [entry for entry in _lines(stream) if entry["logger"] == "django.request"]
    assert lines and all(entry["database"] == "lucia" for entry in lines)


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_a_secret_logged_by_mistake_is_never_written(configured, log_format, db):
    stream = configured(log_format)
    log = logging.getLogger("continuity.tasks.purge")
    log.warning("connecting to %s for review 12", URL)
    log.info("UPSTASH_REDIS_REST_TOKEN=%s", TOKEN)
    try:
        raise ConnectionError(f"cannot reach {URL}")
    except ConnectionError:
        log.exception("review 12 failed")
    log.info("review 12 of lucia: 3000 keys scanned")
    written = stream.getvalue()
    assert TOKEN not in written and "s3cr3t-Pa55word" not in written
    assert written.count("[withheld: looked like a secret (URL with a password)]") == 2  # the message, the traceback line
    assert "[withheld: looked like a secret (" in written and "Upstash token" in written
    # What is not a secret is kept, lines around a withheld one included.
    assert "review 12 failed" in written and "review 12 of lucia: 3000 keys scanned" in written
    assert "Traceback (most recent call last)" in written
    if log_format == "json":
        entries = _lines(stream)
        assert [e["level"] for e in entries] == ["WARNING", "INFO", "ERROR", "INFO"]
        assert "ConnectionError" in entries[2]["exception"]


def test_scrub_keeps_clean_text_and_withholds_only_the_lines_with_a_secret():
    assert logs.scrub("3000 keys scanned\nno findings") == "3000 keys scanned\nno findings"
    assert logs.scrub(f"first line\nurl {URL}\nlast line") == (
        "first line\n[withheld: looked like a secret (URL with a password)]\nlast line")


def test_a_job_task_logs_its_run_id_and_database(lucia, eager):
    from continuity.models import ReviewRun
    from continuity.tasks.review import review_database_task

    run = ReviewRun.objects.create(database=lucia, status=ReviewRun.SUCCEEDED)
    stream, handler = io.StringIO(), logging.StreamHandler()
    handler.stream = stream
    handler.addFilter(logs.ContextFilter())
    handler.addFilter(logs.SecretFilter())
    handler.setFormatter(logs.JsonFormatter())
    trace = logging.getLogger("celery.app.trace")
    trace.addHandler(handler)
    old_level, trace.level = trace.level, logging.INFO
    try:
        assert review_database_task.delay(run.pk).get() == "succeeded"
        with logs.bind(user="nobody"):
            logging.getLogger("celery.app.trace").info("outside a task")
    finally:
        trace.removeHandler(handler)
        trace.setLevel(old_level)
    [succeeded, outside] = _lines(stream)
    assert "succeeded" in succeeded["message"]
    assert succeeded["run_id"] == run.pk and succeeded["database"] == "lucia"
    assert succeeded["task"] == "continuity.review_database" and succeeded["task_id"]
    assert "run_id" not in outside and outside["user"] == "nobody"


def _celery_process_logs(log_format):
    """What a worker's (and beat's: the same `app.log.setup`) logging writes: a real Python
    process sets up Celery's logging and logs a secret through the root and the task logger."""
    script = (
        "import logging\n"
        "from dashboard.celery import app\n"
        "import django; django.setup()\n"
        "app.log.setup(loglevel='INFO', redirect_stdouts=False)\n"
        "from celery.utils.log import get_task_logger\n"
        f"logging.getLogger('continuity.tasks.review').warning('reaching %s', {URL!r})\n"
        f"get_task_logger('continuity.tasks.purge').warning('token %s', {TOKEN!r})\n"
        "logging.getLogger('dashboard.alerts').info('review 12 of lucia: 3000 keys')\n"
    )
    env = {**os.environ, "LOG_FORMAT": log_format, "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    result = subprocess.run([sys.executable, "-c", script], cwd=settings.BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_the_worker_and_beat_write_json_lines_without_the_secret():
    written = _celery_process_logs("json")
    assert TOKEN not in written and "s3cr3t-Pa55word" not in written
    entries = [json.loads(line) for line in written.splitlines() if line.startswith("{")]
    by_logger = {e["logger"]: e for e in entries}
    assert by_logger["continuity.tasks.review"]["message"] == "[withheld: looked like a secret (URL with a password)]"
    assert by_logger["continuity.tasks.purge"]["message"].startswith("[withheld: looked like a secret (")
    assert by_logger["dashboard.alerts"]["message"] == "review 12 of lucia: 3000 keys"
    assert by_logger["dashboard.alerts"]["level"] == "INFO"


def test_the_worker_keeps_plain_text_by_default_and_still_scans():
    written = _celery_process_logs("plain")
    assert TOKEN not in written and "s3cr3t-Pa55word" not in written
    assert "review 12 of lucia: 3000 keys" in written and not written.lstrip().startswith("{")
    assert "[withheld: looked like a secret (URL with a password)]" in written


def test_an_unknown_log_format_fails_at_start():
    env = {**os.environ, "LOG_FORMAT": "xml"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "LOG_FORMAT must be plain or json" in result.stderr
