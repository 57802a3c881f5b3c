import pytest

from continuity import keyspace
from continuity.keyspace import meta

pytestmark = pytest.mark.usefixtures("transport")

ODD_KEYS = [b"lucia:session:plain", b"lucia:session:a*b", b"lucia:session:[x]?", b"lucia:session:back\\slash",
            b"lucia:session:\xff\xfe", b"lucia:session:<script>alert(1)</script>", b"lucia:session:sp ace\n\"q'"]


def test_it_escapes_glob_characters_so_a_prefix_matches_itself_only(monitored, lucia):
    monitored.set(b"lucia:session:a*b:1", b"x")
    monitored.set(b"lucia:session:aXb:1", b"x")
    monitored.set(b"lucia:session:[x]:1", b"x")
    monitored.set(b"lucia:session:x:1", b"x")
    found = set()
    cursor = 0
    while True:
        cursor, keys = keyspace.scan_page(lucia, match=keyspace.match_pattern(b"lucia:session:a*b"), cursor=cursor)
        found.update(keys)
        if cursor == 0:
            break
    assert found == {b"lucia:session:a*b:1"}
    found = set(keyspace.scan_page(lucia, match=keyspace.match_pattern(b"lucia:session:[x]"), count=10000)[1])
    assert found == {b"lucia:session:[x]:1"}


@pytest.mark.parametrize("key", ODD_KEYS)
def test_it_round_trips_odd_keys_through_url_tokens(key):
    assert keyspace.decode_key(keyspace.encode_key(key)) == key


def test_it_shows_binary_and_control_bytes_escaped():
    assert keyspace.display_key(b"a\xff\n\x00b") == "a\\xff\\n\\x00b"
    assert keyspace.display_key("ü".encode()) == "ü"


def test_it_rejects_tokens_that_are_not_base64url():
    with pytest.raises(ValueError):
        keyspace.decode_key("abc=+/")


def test_it_reads_ttl_type_and_memory_for_a_batch_in_one_call(monitored, lucia, transport):
    monitored.set(ODD_KEYS[0], b"v", px=900_000)
    monitored.hset(ODD_KEYS[4], mapping={"a": "1"})
    monitored.set(ODD_KEYS[5], b"x" * 5000)
    before = monitored.info("commandstats")
    result = keyspace.key_metadata(lucia, [ODD_KEYS[0], ODD_KEYS[4], ODD_KEYS[5], b"lucia:gone"])
    after = monitored.info("commandstats")
    assert [m.key for m in result] == [ODD_KEYS[0], ODD_KEYS[4], ODD_KEYS[5], b"lucia:gone"]
    assert result[0].type == "string" and 890_000 < result[0].ttl_ms <= 900_000
    assert result[1].type == "hash" and result[1].ttl_ms is None
    assert result[2].memory > 5000
    assert not result[3].exists and result[3].ttl_ms is None
    calls = lambda stats, cmd: stats.get(f"cmdstat_{cmd}", {}).get("calls", 0)  # noqa: E731
    # One script call; no per-key PTTL commands from the client.
    scripts = ("evalsha_ro", "eval_ro", "evalsha", "eval")
    assert sum(calls(after, c) - calls(before, c) for c in scripts) <= 2
    # Read-only where the server has it. Over REST the batch names a key that is not UTF-8, so
    # the same script travels as its body with the keys hex-encoded: one EVAL_RO.
    if transport == "rest":
        assert calls(after, "eval_ro") - calls(before, "eval_ro") == 1
    else:
        assert calls(after, "evalsha_ro") - calls(before, "evalsha_ro") >= 1
    assert calls(after, "pttl") - calls(before, "pttl") == 4  # inside the script


def test_it_falls_back_to_a_pipeline_when_scripting_is_refused(monitored, lucia):
    monitored.set(b"lucia:rate:1", b"v", ex=60)
    monitored.execute_command("ACL", "SETUSER", "noscript", "on", "nopass", "~*", "+@all", "-@scripting")
    client = keyspace.make_client(monitored.connection_pool.connection_kwargs and
                                  f"redis://noscript@127.0.0.1:{monitored.connection_pool.connection_kwargs['port']}/0")
    refused = lambda: sum(monitored.info("commandstats").get(f"cmdstat_{cmd}", {}).get("rejected_calls", 0)  # noqa: E731
                          for cmd in ("eval", "evalsha"))
    try:
        result = meta.key_metadata(keys=[b"lucia:rate:1"], client=client)
        assert result[0].type == "string" and 0 < result[0].ttl_ms <= 60_000
        assert result[0].memory is not None
        tried = refused()
        assert tried >= 1  # the script was tried once and refused by the ACL...
        assert meta.key_metadata(keys=[b"lucia:rate:1"], client=client)[0].type == "string"
        assert refused() == tried  # ...and this client remembers it: no second attempt
    finally:
        client.close()
        monitored.execute_command("ACL", "DELUSER", "noscript")
