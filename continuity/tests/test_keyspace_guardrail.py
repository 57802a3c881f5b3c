"""The purge guardrail belongs to the Redis keyspace, not to one record or one form (issue 15, H1).

The reproduction: an operator creates a second record `shadow` on the same Redis with the key
prefix `lucia` (no colon), registers the namespace `lucia:` on it and purges `lucia:`. Every
path that leads there is tried here (pages, command line, tasks, the operations layer, and
records saved straight into Postgres), against the real redis-server, and Redis must still
hold every key at the end."""

import io
import os

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from continuity import keyspace
from continuity.forms import NamespaceForm
from continuity.models import Namespace, PurgeRun
from continuity.operations import configuration, purge, review
from continuity.operations.purge.targets import check_keyspace
from dashboard import operations
from dashboard.env import keyspace_target
from dashboard.models import AuditEntry, RedisDatabase
from dashboard.record_forms import RedisDatabaseForm

SHADOW = {"name": "shadow", "environment": "production", "provider": "Upstash", "key_prefix": "lucia",
          "url_env": "REDIS_URL"}


@pytest.fixture
def keys(monitored, lucia):
    """3,400 lucia keys in the five namespaces (a fifth of them without a TTL) and one more
    without any namespace."""
    pipe = monitored.pipeline(transaction=False)
    for i in range(3400):
        name = ("session", "focus", "distress", "action", "rate")[i % 5]
        key = f"lucia:{name}:{i}".encode()
        pipe.set(key, b"v") if i % 5 == 0 else pipe.set(key, b"v", ex=3000)
    pipe.set(b"lucia:legacy:1", b"v")
    pipe.execute()
    return set(monitored.scan_iter(count=1000))


@pytest.fixture(params=["same variable", "same REST endpoint"])
def shadow(request, lucia, monkeypatch):
    """The attack's records, saved straight into Postgres (no form, no operation), as a
    bypass of every save-time rule would leave them: the guardrail must hold in the engine.
    Either on lucia's own URL variable, or (lucia over REST) on variables of its own that
    name the same REST endpoint under another spelling, with the same token."""
    fields = SHADOW
    if request.param == "same REST endpoint":
        bridge = request.getfixturevalue("over_rest")
        monkeypatch.setenv("SHADOW_REST_URL", bridge.url.replace("127.0.0.1", "LOCALHOST") + "/")
        monkeypatch.setenv("SHADOW_REST_TOKEN", os.environ["UPSTASH_REDIS_REST_TOKEN"])
        fields = {**SHADOW, "url_env": "SHADOW_REDIS_URL", "rest_url_env": "SHADOW_REST_URL",
                  "rest_token_env": "SHADOW_REST_TOKEN"}
    record = RedisDatabase.objects.create(**fields)
    Namespace.objects.create(database=record, name="all", prefix="lucia:", ttl_required=True, max_ttl_seconds=60,
                             violation_action=Namespace.DELETE)
    return record


def still_all(monitored, keys):
    assert set(monitored.scan_iter(count=1000)) == keys and monitored.dbsize() == 3401


# --- the records: who may create what --------------------------------------------------------
def test_an_operator_cannot_create_the_shadow_record(operator_client, keys, monitored):
    response = operator_client.post(reverse("dashboard:database_create"), {**SHADOW, "reason": "x"})
    assert response.status_code == 403
    assert not RedisDatabase.objects.filter(name="shadow").exists()
    still_all(monitored, keys)


def test_an_admin_cannot_create_a_record_on_the_same_keyspace_with_another_key_prefix(admin_client, lucia):
    response = admin_client.post(reverse("dashboard:database_create"), {**SHADOW, "reason": "a second view"})
    body = response.content.decode()
    assert response.status_code == 200
    assert "lucia already monitors this Redis keyspace with the key prefix &#x27;lucia:&#x27;" in body
    assert not RedisDatabase.objects.filter(name="shadow").exists()
    assert not AuditEntry.objects.filter(action="database.create").exists()


def test_an_admin_may_add_a_record_that_shares_the_key_prefix_audited_as_shared(admin_client, lucia):
    response = admin_client.post(reverse("dashboard:database_create"),
                                 {**SHADOW, "key_prefix": "lucia:", "reason": "a record for the read-only user"})
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="database.create")
    assert entry.note == "a record for the read-only user (shares its Redis keyspace with lucia)"


def test_the_same_keyspace_is_found_under_another_spelling_of_the_url(admin_client, lucia, monkeypatch, redis_server):
    # REDIS_URL is redis://127.0.0.1:PORT/0; `localhost` reaches the same server.
    monkeypatch.setenv("SHADOW_REDIS_URL", f"redis://user:pw@localhost:{redis_server.port}")
    response = admin_client.post(reverse("dashboard:database_create"),
                                 {**SHADOW, "url_env": "SHADOW_REDIS_URL", "reason": "x"})
    assert response.status_code == 200 and "lucia already monitors this Redis keyspace" in response.content.decode()
    # Another database number of the same server is another keyspace.
    monkeypatch.setenv("SHADOW_REDIS_URL", f"redis://localhost:{redis_server.port}/5")
    response = admin_client.post(reverse("dashboard:database_create"),
                                 {**SHADOW, "url_env": "SHADOW_REDIS_URL", "reason": "db 5"})
    assert response.status_code == 302


@pytest.mark.parametrize("a,b,same", [
    ("redis://127.0.0.1:6379/0", "redis://localhost:6379", True),
    ("rediss://default:pw@LOCALHOST:6379/0", "redis://127.0.0.1:6379", True),
    ("redis://127.0.0.2:6379", "redis://[::1]:6379/0", True),
    ("redis://0.0.0.0:6379", "redis://127.0.0.1:6379", True),
    ("redis://[::ffff:10.0.0.1]:6379", "redis://10.0.0.1:6379", True),
    ("redis://eu1-a.upstash.io:6379", "rediss://x:y@EU1-A.upstash.io.:6379/", True),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6380/0", False),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1", False),
    ("redis://eu1-a.upstash.io:6379", "redis://eu1-b.upstash.io:6379", False),
    ("unix:///tmp/../tmp/r.sock?db=0", "unix:///tmp/r.sock", True),
    ("unix:///tmp/r.sock?db=2", "unix:///tmp/r.sock", False),
])
def test_keyspace_targets_compare_one_spelling(a, b, same):
    assert (keyspace_target(a) == keyspace_target(b)) is same


def test_an_operator_cannot_change_the_url_variable_or_key_prefix(operator_client, lucia, monkeypatch, redis_server):
    monkeypatch.setenv("ELSEWHERE_URL", f"redis://127.0.0.1:{redis_server.port}/6")
    data = {"name": "lucia", "environment": "production", "provider": "Upstash", "region": "eu-west-1",
            "key_prefix": "", "url_env": "ELSEWHERE_URL", "readonly_url_env": "ELSEWHERE_URL", "reason": "x"}
    assert operator_client.post(reverse("dashboard:database_edit", args=["lucia"]), data).status_code == 302
    lucia.refresh_from_db()
    assert (lucia.key_prefix, lucia.url_env, lucia.readonly_url_env, lucia.region) == ("lucia:", "REDIS_URL", "",
                                                                                       "eu-west-1")


def test_an_admin_changes_the_url_variable_with_a_reason_or_not_at_all(admin_client, lucia, monkeypatch,
                                                                       redis_server):
    monkeypatch.setenv("ELSEWHERE_URL", f"redis://127.0.0.1:{redis_server.port}/6")
    url = reverse("dashboard:database_edit", args=["lucia"])
    data = {"name": "lucia", "environment": "production", "provider": "Upstash", "key_prefix": "lucia:",
            "url_env": "ELSEWHERE_URL"}
    refused = admin_client.post(url, data)
    assert refused.status_code == 200 and "Give a reason" in refused.content.decode()
    assert admin_client.post(url, {**data, "reason": "moved to db 6"}).status_code == 302
    entry = AuditEntry.objects.get(action="database.edit")
    assert (entry.before["url_env"], entry.after["url_env"], entry.note) == ("REDIS_URL", "ELSEWHERE_URL",
                                                                             "moved to db 6")


def test_the_operations_layer_refuses_what_the_form_refuses(operator, admin, lucia):
    form = RedisDatabaseForm(data=SHADOW, user=admin)
    assert form.is_valid() is False and "already monitors this Redis keyspace" in str(form.errors)
    # A form validated while lucia read another variable is checked again when saved.
    RedisDatabase.objects.filter(pk=lucia.pk).update(url_env="UNSET_URL")
    form = RedisDatabaseForm(data={**SHADOW, "reason": "shadow"}, user=admin)
    assert form.is_valid()
    RedisDatabase.objects.filter(pk=lucia.pk).update(url_env="REDIS_URL")
    with pytest.raises(ValidationError, match="already monitors this Redis keyspace"):
        operations.save_database(form=form, actor=admin, reason="shadow")
    with pytest.raises(PermissionDenied):
        same_prefix = RedisDatabaseForm(data={**SHADOW, "key_prefix": "lucia:", "reason": "shadow"}, user=admin)
        assert same_prefix.is_valid()
        operations.save_database(form=same_prefix, actor=operator, reason="shadow")
    assert not RedisDatabase.objects.filter(name="shadow").exists()


def test_a_namespace_may_not_cover_another_records_key_prefix_or_namespaces(operator_client, operator, lucia):
    shadow = RedisDatabase.objects.create(**SHADOW)  # saved straight into Postgres
    for prefix, needle in [("lucia:", "covers the whole key prefix &#x27;lucia:&#x27; of lucia"),
                           ("lucia:s", "covers the namespace &#x27;lucia:session:&#x27; of lucia")]:
        response = operator_client.post(reverse("continuity:namespace_create", args=["shadow"]),
                                        {"name": "x", "prefix": prefix, "max_ttl_seconds": "60", "ttl_required": "on",
                                         "max_payload_bytes": "1024", "violation_action": "report"})
        assert response.status_code == 200 and needle in response.content.decode()
    # The operation checks again whatever the form said.
    form = NamespaceForm(data={"name": "x", "prefix": "lucia:session:x", "max_payload_bytes": "1024",
                               "violation_action": "report"}, database=shadow)
    assert form.is_valid()
    form.instance.prefix = "lucia:"
    with pytest.raises(ValidationError, match="covers the whole key prefix"):
        configuration.save_namespace(form=form, actor=operator)
    assert not Namespace.objects.filter(database=shadow).exists()


# --- the engine: every path that leads to a purge -----------------------------------------------
def test_the_purge_page_refuses_the_shadow_target(operator_client, keys, monitored, shadow):
    for kind, target, refusal in [
            ("prefix", "lucia:", "covers the whole key prefix &#x27;lucia:&#x27; of lucia, which monitors the same"),
            ("pattern", "lucia:*", "covers the whole key prefix &#x27;lucia:&#x27; of lucia, which monitors the same"),
            ("pattern", "luci*", "reaches beyond the registered namespaces of shadow"),
            ("prefix", "lucia", "reaches beyond the registered namespaces of shadow")]:
        response = operator_client.post(reverse("continuity:purge_new"),
                                        {"database": "shadow", "target_kind": kind, "target": target, "action": "delete"})
        assert response.status_code == 400 and refusal in response.content.decode(), (kind, target)
    assert not PurgeRun.objects.exists()
    still_all(monitored, keys)


def test_the_purge_command_refuses_the_shadow_target(keys, monitored, shadow, operator):
    for target in (["--prefix", "lucia:"], ["--pattern", "lucia:*"]):
        with pytest.raises(CommandError, match="covers the whole key prefix 'lucia:' of lucia"):
            call_command("purge", "--action", "delete",
                         "--database", "shadow", *target, "--reason", "r", "--yes", "--as", "otto",
                         stdout=io.StringIO(), stderr=io.StringIO())
    assert not PurgeRun.objects.exists()
    still_all(monitored, keys)


def test_a_run_saved_in_postgres_is_refused_at_execution_and_audited(keys, monitored, shadow, eager):
    """A queued run the forms never saw (written straight into Postgres), executed by the
    real task: the engine refuses it before any Redis command."""
    from continuity.tasks.purge import purge_task

    calls = monitored.info("commandstats")
    run = PurgeRun.objects.create(database=shadow, target_kind=PurgeRun.PREFIX, target_value="lucia:",
                                  target_token=keyspace.encode_key(b"lucia:"), match_pattern="lucia:*", action=PurgeRun.DELETE,
                                  status=PurgeRun.QUEUED, reason="shadow", batch_size=1000, rate_cap=0)
    purge_task.delay(run.pk)
    run.refresh_from_db()
    assert run.status == PurgeRun.FAILED and "covers the whole key prefix 'lucia:' of lucia" in run.error
    assert run.done == 0
    assert AuditEntry.objects.get(action="purge.fail", target_id=str(run.pk)).note == run.error
    assert monitored.info("commandstats").get("cmdstat_scan") == calls.get("cmdstat_scan")
    still_all(monitored, keys)


def test_confirming_a_preview_made_before_the_shadow_existed_is_refused(keys, monitored, lucia, operator):
    """A preview of `lucia:session:` on a record `late` that covered nothing when it was
    made; then the shadow appears, and `late` lies inside it."""
    late = RedisDatabase.objects.create(name="late", key_prefix="lucia:", url_env="REDIS_URL")
    Namespace.objects.create(database=late, name="s", prefix="lucia:session:")
    preview = purge.preview_purge(action="delete",
                                  database=late, kind="prefix", value=b"lucia:session:", actor=operator)
    assert preview.matched == 680
    Namespace.objects.filter(database=lucia, prefix="lucia:session:").update(prefix="lucia:session:v2:")
    with pytest.raises(purge.PurgeRefused, match="lies in no namespace of lucia"):
        purge.confirm_purge(run=preview.run, confirmation="lucia:session:", reason="r", actor=operator, source="cli")
    still_all(monitored, keys)


def test_the_policy_purge_leaves_the_shadow_namespace_alone(keys, monitored, shadow):
    out = io.StringIO()
    call_command("policy_purge", "--database", "shadow", stdout=out)
    assert "refused lucia:: 'lucia:' covers the whole key prefix 'lucia:' of lucia" in out.getvalue()
    outcome = purge.policy_purge(database=shadow)
    assert outcome.runs == [] and list(outcome.refused) == ["lucia:"]
    assert not PurgeRun.objects.exists()
    still_all(monitored, keys)


def test_the_policy_purge_task_leaves_the_shadow_namespace_alone(keys, monitored, shadow):
    from continuity.tasks.purge import policy_purge_task

    result = policy_purge_task.apply(kwargs={"database": "shadow"}).get()
    assert result["shadow"]["runs"] == [] and list(result["shadow"]["refused"]) == ["lucia:"]
    still_all(monitored, keys)


def test_a_finding_purge_of_the_shadow_namespace_is_refused(keys, monitored, shadow, operator):
    run = review.review_database(database=shadow).run
    assert run.status == "succeeded" and run.findings["no_ttl"] == 681
    with pytest.raises(purge.PurgeRefused, match="covers the whole key prefix 'lucia:' of lucia"):
        purge.preview_purge(action="delete",
                            database=shadow, kind="finding", review_id=run.pk, finding="no_ttl", actor=operator)
    with pytest.raises(CommandError, match="covers the whole key prefix"):
        call_command("purge", "--action", "delete",
                     "--database", "shadow", "--review", str(run.pk), "--finding", "no_ttl", "--reason", "r",
                     "--yes", "--as", "otto", stdout=io.StringIO(), stderr=io.StringIO())
    still_all(monitored, keys)


# --- the rule, row by row ------------------------------------------------------------------------
@pytest.mark.parametrize("record,head,refusal", [
    ("lucia", b"lucia:session:", None),
    ("lucia", b"lucia:session:ab", None),
    ("lucia", b"lucia:session", "lies in no namespace of lucia:"),  # one byte short of the namespace
    ("lucia", b"lucia:", "covers the whole key prefix 'lucia:' of lucia."),
    ("lucia", b"lucia", "covers the whole key prefix"),
    ("lucia", b"", "covers the whole key prefix"),
    ("alias", b"lucia:session:", None),  # inside lucia's namespace and its own
    ("alias", b"lucia:experiment:", "lies in no namespace of lucia, which monitors the same Redis keyspace as alias"),
    ("elsewhere", b"lucia:experiment:", None),  # another keyspace: lucia's namespaces do not bind it
    ("elsewhere", b"lucia:", "covers the whole key prefix 'lucia:' of elsewhere"),
])
def test_the_keyspace_rule(lucia, monkeypatch, redis_server, record, head, refusal):
    monkeypatch.setenv("ELSEWHERE_URL", f"redis://127.0.0.1:{redis_server.port}/7")
    alias = RedisDatabase.objects.create(name="alias", key_prefix="lucia:", url_env="ALIAS_URL")
    monkeypatch.setenv("ALIAS_URL", f"redis://localhost:{redis_server.port}/0")
    elsewhere = RedisDatabase.objects.create(name="elsewhere", key_prefix="lucia:", url_env="ELSEWHERE_URL")
    for other in (alias, elsewhere):
        Namespace.objects.create(database=other, name="session", prefix="lucia:session:")
        Namespace.objects.create(database=other, name="experiment", prefix="lucia:experiment:")
    database = {"lucia": lucia, "alias": alias, "elsewhere": elsewhere}[record]
    if refusal is None:
        check_keyspace(database, [head])
    else:
        with pytest.raises(purge.PurgeRefused, match=refusal.replace("(", r"\(").replace(".", r"\.")):
            check_keyspace(database, [head])


def test_a_record_naming_another_node_of_the_same_cluster_is_on_the_same_keyspace(
        lucia, redis_cluster, cluster_keys, monkeypatch, operator):
    """`lucia` names node 0 of a cluster; `shadow` (saved straight into Postgres) names node 1
    of the same cluster: their URLs differ, their keys do not. The preview and the execution
    read the cluster's nodes and refuse `lucia:` on shadow; the cluster keeps every key."""
    from continuity.tests.clusters import point_at

    point_at(lucia, monkeypatch, redis_cluster, node=0)
    cluster_keys.mset_nonatomic({f"lucia:session:{i}".encode(): b"v" for i in range(300)})
    monkeypatch.setenv("SHADOW_CLUSTER_URL", redis_cluster.url(1))
    shadow = RedisDatabase.objects.create(**{**SHADOW, "url_env": "SHADOW_CLUSTER_URL"})
    Namespace.objects.create(database=shadow, name="all", prefix="lucia:")
    with pytest.raises(purge.PurgeRefused, match="covers the whole key prefix 'lucia:' of lucia"):
        purge.preview_purge(action="delete", database=shadow, kind="prefix", value=b"lucia:", actor=operator)
    run = PurgeRun.objects.create(database=shadow, target_kind=PurgeRun.PREFIX, target_value="lucia:",
                                  target_token=keyspace.encode_key(b"lucia:"), match_pattern="lucia:*",
                                  action=PurgeRun.DELETE, status=PurgeRun.QUEUED, reason="shadow", batch_size=100,
                                  rate_cap=0)
    with pytest.raises(purge.PurgeRefused, match="covers the whole key prefix 'lucia:' of lucia"):
        purge.execute_purge(run_id=run.pk)
    run.refresh_from_db()
    assert (run.status, run.done) == ("failed", 0)
    assert len(cluster_keys.keys("lucia:session:*", target_nodes=cluster_keys.ALL_NODES)) == 300


# --- a keyspace reached by Upstash's REST API ----------------------------------------------------
def test_records_on_one_rest_endpoint_or_one_upstash_database_share_a_keyspace(lucia, monkeypatch):
    def record(name, **variables):
        for variable, value in variables.items():
            monkeypatch.setenv(variable, value)
        url = next((v for v in variables if v.endswith("_REDIS_URL")), f"{name.upper()}_REDIS_URL")
        rest = next((v for v in variables if v.endswith("_REST_URL")), "")
        return RedisDatabase(name=name, url_env=url, rest_url_env=rest,
                             rest_token_env=rest.replace("_URL", "_TOKEN") if rest else "")

    a = record("a", A_REST_URL="https://EU1-merry-cat.upstash.io/", A_REST_TOKEN="t1")
    b = record("b", B_REST_URL="https://eu1-merry-cat.upstash.io:443", B_REST_TOKEN="t2")
    c = record("c", C_REDIS_URL="rediss://default:pw@eu1-merry-cat.upstash.io:6379")  # its TCP endpoint
    d = record("d", D_REST_URL="https://eu1-other-dog.upstash.io", D_REST_TOKEN="t3")
    e = record("e", E_REST_URL="http://127.0.0.1:8079", E_REST_TOKEN="t4")
    f = record("f", F_REST_URL="http://localhost:8079/", F_REST_TOKEN="t5")
    assert a.keyspace_marks() & b.keyspace_marks() and a.keyspace_marks() & c.keyspace_marks()
    assert not a.keyspace_marks() & d.keyspace_marks()
    assert e.keyspace_marks() & f.keyspace_marks() and not e.keyspace_marks() & a.keyspace_marks()


def test_an_admin_cannot_add_a_record_on_the_same_rest_endpoint_with_another_key_prefix(
        admin_client, lucia, over_rest, monkeypatch):
    monkeypatch.setenv("OTHER_REST_URL", over_rest.url.replace("127.0.0.1", "localhost"))
    monkeypatch.setenv("OTHER_REST_TOKEN", os.environ["UPSTASH_REDIS_REST_TOKEN"])
    fields = {**SHADOW, "name": "other", "url_env": "OTHER_REDIS_URL", "rest_url_env": "OTHER_REST_URL",
              "rest_token_env": "OTHER_REST_TOKEN", "reason": "x"}
    response = admin_client.post(reverse("dashboard:database_create"), fields)
    assert response.status_code == 200 and "lucia already monitors this Redis keyspace" in response.content.decode()
    assert not RedisDatabase.objects.filter(name="other").exists()
