"""Pointing the seeded `lucia` record at one node of a test cluster."""


def point_at(lucia, monkeypatch, cluster, node=0):
    """`lucia` (refreshed) with its URL variable naming node `node` of `cluster`."""
    monkeypatch.setenv("LUCIA_CLUSTER_URL", cluster.url(node))
    type(lucia).objects.filter(pk=lucia.pk).update(url_env="LUCIA_CLUSTER_URL")
    lucia.refresh_from_db()
    return lucia


def parts_of(run):
    """The parts of review `run` (one per node), prepared as its worker does: claimed, then
    `review.prepare` on the database's keyspace."""
    from django.conf import settings

    from continuity.keyspace import nodes
    from continuity.operations import review

    token, _ = run.claim(settings.REVIEW_LEASE_SECONDS)
    with nodes.primaries(run.database) as keyspace:
        return review.prepare(run, token, keyspace)
