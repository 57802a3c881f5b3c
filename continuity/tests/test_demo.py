import re
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

    returned = threading.Event()

    def terminate_once_writing():
        # Wait on state, not on time: SIGTERM as soon as the writer has written a few keys.
        while monitored.dbsize() < 5 and not returned.wait(0.02):
            pass
        if not returned.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=terminate_once_writing, daemon=True)
    watcher.start()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        call_command("demo_writer", "--rate", "20", "--seed", "1", "--duration", "60")
    finally:
        returned.set()
    watcher.join()
    assert signal.getsignal(signal.SIGTERM) is previous
    out = capsys.readouterr().out
    writes = re.search(r"demo_writer: stopped after (\d+) writes, (\d+) refreshes, (\d+) expiries", out)
    assert writes, out
    # The signal stopped it, not the 60 s duration (which would take some 1,200 steps at 20/s).
    assert 5 <= int(writes[1]) and sum(int(n) for n in writes.groups()) < 300
    keys = list(monitored.scan_iter(match=b"lucia:*"))
    assert len(keys) >= 5
    assert all(0 < monitored.ttl(k) <= 1200 for k in keys)
