from collections import Counter

from django.core.management import call_command

from continuity import demo


def test_it_generates_every_violation_kind_in_a_small_share():
    specs = list(demo.lucia_keyspace(20_000, seed=3))
    kinds = Counter(s.violation for s in specs)
    for kind in demo.VIOLATIONS:
        assert 0.01 < kinds[kind] / len(specs) < 0.03, kind
    assert len({s.key for s in specs}) == len(specs)


def test_it_loads_the_demo_keyspace_into_the_monitored_database(monitored, lucia, capsys):
    call_command("load_demo_keyspace", "--keys", "500")
    assert monitored.dbsize() == 500
    info = monitored.info("keyspace")["db0"]
    assert 0 < info["keys"] - info["expires"] < 50  # a few keys without TTL, by design
    assert "wrote 500 keys" in capsys.readouterr().out


def test_it_writes_in_policy_demo_keys_through_the_store_adapter(monitored, lucia, capsys):
    call_command("load_demo_keyspace", "--keys", "300", "--seed", "5")
    out = capsys.readouterr().out
    specs = list(demo.lucia_keyspace(300, seed=5, violation_rate=0.01))
    clean = [s for s in specs if s.violation is None]
    assert f"({len(clean)} through the store adapter, {300 - len(clean)} deliberate violations raw)" in out
    for spec in clean[:50]:
        assert monitored.type(spec.key).decode() == spec.type
        assert 0 < monitored.ttl(spec.key) <= spec.ttl_seconds


def test_it_runs_the_demo_writer_and_stops_on_sigterm(monitored, lucia, capsys):
    import os
    import signal
    import threading

    timer = threading.Timer(1.0, os.kill, args=(os.getpid(), signal.SIGTERM))
    timer.start()
    import time

    previous = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    call_command("demo_writer", "--rate", "20", "--seed", "1", "--duration", "30")
    assert time.monotonic() - started < 10  # the signal stopped it, not the duration
    timer.join()
    assert signal.getsignal(signal.SIGTERM) is previous
    out = capsys.readouterr().out
    assert "demo_writer: stopped after" in out
    keys = list(monitored.scan_iter(match=b"lucia:*"))
    assert 5 <= len(keys) <= 40
    assert all(0 < monitored.ttl(k) <= 1200 for k in keys)
