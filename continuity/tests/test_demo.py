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
