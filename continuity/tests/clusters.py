"""Pointing the seeded `lucia` record at one node of a test cluster."""


def point_at(lucia, monkeypatch, cluster, node=0):
    """`lucia` (refreshed) with its URL variable naming node `node` of `cluster`."""
    monkeypatch.setenv("LUCIA_CLUSTER_URL", cluster.url(node))
    type(lucia).objects.filter(pk=lucia.pk).update(url_env="LUCIA_CLUSTER_URL")
    lucia.refresh_from_db()
    return lucia
