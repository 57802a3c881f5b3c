"""The local REST endpoint speaks Upstash's documented protocol: proven with the official
`upstash-redis` client's own calls, and with raw HTTP where the protocol's shapes matter
(status codes, error JSON, base64, the size limit, kept-alive connections)."""

import base64
import json

import httpx
import pytest
import redis
from upstash_redis import Redis as Upstash
from upstash_redis.errors import UpstashError

from dashboard.devtools.restbridge import RestBridge

TOKEN = "bridge-test-token"


@pytest.fixture
def bridge(redis_server, monitored):
    """A bridge of its own (a small size limit, a rate limit off) in front of db 0."""
    server = RestBridge(redis_server.url(0), {TOKEN: (None, None)}, max_request_bytes=64 * 1024).start()
    yield server
    server.stop()


@pytest.fixture
def official(bridge):
    client = Upstash(bridge.url, TOKEN, rest_retries=0, allow_telemetry=False)
    yield client
    client.close()


def post(bridge, path, body, token=TOKEN, encoding=True):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if encoding:
        headers["Upstash-Encoding"] = "base64"
    return httpx.post(bridge.url + path, content=json.dumps(body), headers=headers)


def test_it_answers_the_official_clients_set_get_scan_and_ttl(official, monitored):
    assert official.set("lucia:session:1", "héllo ✓", ex=60) is True
    assert official.get("lucia:session:1") == "héllo ✓"
    assert monitored.get(b"lucia:session:1") == "héllo ✓".encode()
    assert 0 < official.ttl("lucia:session:1") <= 60
    for i in range(30):
        official.set(f"lucia:rate:{i}", "1")
    cursor, seen = 0, set()
    while True:
        cursor, keys = official.scan(cursor, match="lucia:rate:*", count=7)
        seen.update(keys)
        if cursor == 0:
            break
    assert seen == {f"lucia:rate:{i}" for i in range(30)}
    assert official.get("lucia:absent") is None


def test_it_runs_the_official_clients_scripts_and_read_only_scripts(official):
    official.set("lucia:focus:1", "abc")
    assert official.eval("return {KEYS[1], ARGV[1], redis.call('GET', KEYS[1])}", ["lucia:focus:1"], ["x"]) == \
        ["lucia:focus:1", "x", "abc"]
    sha = official.script_load("return redis.call('STRLEN', KEYS[1])")
    assert official.evalsha(sha, ["lucia:focus:1"]) == 3
    assert official.eval_ro("return redis.call('GET', KEYS[1])", ["lucia:focus:1"]) == "abc"
    with pytest.raises(UpstashError, match="NOSCRIPT"):
        official.evalsha("0" * 40, ["lucia:focus:1"])


def test_it_runs_the_official_clients_pipeline_and_transaction(official, monitored):
    pipe = official.pipeline()
    pipe.set("lucia:action:1", "a")
    pipe.incr("lucia:action:n")
    pipe.get("lucia:action:1")
    assert pipe.exec() == [True, 1, "a"]
    tx = official.multi()
    tx.set("lucia:action:2", "b")
    tx.incr("lucia:action:n")
    assert tx.exec() == [True, 2]
    assert monitored.get(b"lucia:action:n") == b"2"


def test_binary_values_come_back_exact_in_base64_and_as_replacement_characters_without_it(official, bridge,
                                                                                         monitored):
    monitored.set(b"lucia:session:bin", b"\xff\x00\x80ok")
    answer = post(bridge, "/", ["GET", "lucia:session:bin"]).json()
    assert base64.b64decode(answer["result"]) == b"\xff\x00\x80ok"
    assert post(bridge, "/", ["GET", "lucia:session:bin"], encoding=False).json() == {"result": "\ufffd\x00\ufffdok"}
    plain = Upstash(bridge.url, TOKEN, rest_encoding=None, rest_retries=0, allow_telemetry=False)
    assert plain.get("lucia:session:bin") == "\ufffd\x00\ufffdok"  # the official client, as Upstash documents
    with pytest.raises(UnicodeDecodeError):  # it decodes every reply as UTF-8: why the dashboard has its own
        official.get("lucia:session:bin")


def test_it_encodes_every_string_but_ok_and_keeps_errors_and_numbers_plain(bridge, monitored):
    monitored.set(b"k", b"v")
    assert post(bridge, "/", ["SET", "k", "v"]).json() == {"result": "OK"}
    assert post(bridge, "/", ["TYPE", "k"]).json() == {"result": base64.b64encode(b"string").decode()}
    assert post(bridge, "/", ["DBSIZE"]).json() == {"result": 1}
    answer = post(bridge, "/pipeline", [["GET", "k"], ["INCR", "k"], ["EXISTS", "nope"], ["GET", "nope"]])
    assert answer.status_code == 200
    assert answer.json() == [{"result": "dg=="}, {"error": "ERR value is not an integer or out of range"},
                             {"result": 0}, {"result": None}]
    single = post(bridge, "/", ["INCR", "k"])
    assert single.status_code == 400 and single.json() == {"error": "ERR value is not an integer or out of range"}


def test_multi_exec_is_atomic_and_refuses_a_bad_transaction_whole(bridge, monitored):
    assert post(bridge, "/multi-exec", [["SET", "t", "1"], ["INCR", "t"]]).json() == [{"result": "OK"}, {"result": 2}]
    refused = post(bridge, "/multi-exec", [["SET", "t", "9"], ["NOSUCHCOMMAND"]])
    assert refused.status_code == 400 and refused.json()["error"].startswith("EXECABORT")
    assert monitored.get(b"t") == b"2"
    assert post(bridge, "/", ["WATCH", "t"]).status_code == 400  # no connection state over REST


def test_a_wrong_or_missing_token_gets_401(bridge):
    for token in ("wrong", ""):
        answer = post(bridge, "/", ["PING"], token=token)
        assert answer.status_code == 401 and answer.json() == {"error": "WRONGPASS invalid or missing auth token"}
    assert httpx.get(f"{bridge.url}/ping?_token={TOKEN}").json() == {"result": "PONG"}  # the path form


def test_a_request_over_the_size_limit_gets_the_documented_error_and_the_connection_stays_usable(bridge):
    with httpx.Client(base_url=bridge.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        big = client.post("/", content=json.dumps(["SET", "big", "x" * 70_000]))
        assert big.status_code == 400 and big.json() == {"error": "ERR max request size exceeded"}
        assert client.post("/", content=json.dumps(["PING"])).json() == {"result": "PONG"}


def test_a_rate_limited_request_gets_429(redis_server, monitored):
    server = RestBridge(redis_server.url(0), {TOKEN: (None, None)}, rate_limit=(2, 3600)).start()
    try:
        codes = [post(server, "/", ["PING"]).status_code for _ in range(3)]
    finally:
        server.stop()
    assert codes == [200, 200, 429]


def test_past_a_request_limit_it_answers_429_as_upstash_and_runs_nothing(bridge, monitored):
    bridge.limit_requests(2)
    answers = [post(bridge, "/", ["INCR", "lucia:counter"]) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[2].json() == {"error": "ERR max requests limit exceeded. Limit: 2, Usage: 2. See "
                                          "https://upstash.com/docs/redis/troubleshooting/max_requests_limit for details"}
    assert post(bridge, "/pipeline", [["INCR", "lucia:counter"]]).status_code == 429
    assert monitored.get(b"lucia:counter") == b"2"  # the refused requests ran nothing
    bridge.limit_requests(None)
    assert post(bridge, "/", ["INCR", "lucia:counter"]).status_code == 200 and monitored.get(b"lucia:counter") == b"3"
    bridge.limit_requests(1, refused=2)  # a limit that passes: two requests refused, then served again
    codes = [post(bridge, "/", ["INCR", "lucia:counter"]).status_code for _ in range(4)]
    assert codes == [200, 429, 429, 200] and monitored.get(b"lucia:counter") == b"5"


def test_a_read_only_token_refuses_writes_scan_and_scripts_as_redis_acl(redis_server, monitored):
    from dashboard.devtools.restbridge import read_only_token_user

    user = read_only_token_user(monitored)
    server = RestBridge(redis_server.url(0), {"ro": user}).start()
    try:
        monitored.set(b"lucia:session:1", b"v")
        assert post(server, "/", ["GET", "lucia:session:1"], token="ro").json() == {"result": "dg=="}
        for command in (["SET", "x", "1"], ["SCAN", "0"], ["EVAL_RO", "return 1", "0"], ["KEYS", "*"]):
            answer = post(server, "/", command, token="ro")
            assert answer.status_code == 400 and answer.json()["error"].startswith("NOPERM"), command
    finally:
        server.stop()


def test_connections_are_kept_alive_and_sync_tokens_come_back(bridge):
    from continuity.keyspace.rest import RestClient

    client = RestClient(bridge.url, TOKEN, connect_timeout=2, read_timeout=2)
    try:
        for _ in range(5):
            assert client.ping() is True
        connection = client.connection_pool.get_connection()
        try:
            pool = connection._http._transport._pool
            assert len(pool.connections) == 1  # one HTTP connection for every request
        finally:
            client.connection_pool.release(connection)
        assert bridge.last_sync_token is not None and int(bridge.last_sync_token) >= 4
    finally:
        client.close()


def test_the_dashboards_client_reads_the_same_bytes_as_tcp(bridge, monitored):
    from continuity.keyspace.rest import RestClient

    client = RestClient(bridge.url, TOKEN, connect_timeout=2, read_timeout=2)
    odd = [b"lucia:session:\xff\xfe", b"lucia:session:a*b", b"lucia:session:<script>", b"lucia:session:\n\x00"]
    try:
        for i, key in enumerate(odd):
            assert client.set(key, b"\x80" * i + b"v", ex=100) is True
        assert {k: monitored.get(k) for k in odd} == {k: b"\x80" * i + b"v" for i, k in enumerate(odd)}
        assert sorted(client.scan(0, count=100)[1]) == sorted(odd)
        assert client.type(odd[0]) == b"string" and 0 < client.pttl(odd[0]) <= 100_000
        assert client.info("keyspace")["db0"]["keys"] == 4
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            client.hlen(odd[1])
    finally:
        client.close()
