from dashboard import roles


def dashboard(request):
    """Role of the signed-in user and the reachability of each monitored Redis, for the
    navigation bar and the 'Redis unreachable' banner.

    htmx fragments (the 1-second progress polls among them) render no navigation and no banner:
    they get the role flags, which reuse the permissions the view's role check already loaded,
    and skip the database query and the Redis pings. Boosted requests and history restores
    render the whole page and get everything."""
    user = getattr(request, "user", None)
    if not user or not user.is_authenticated:
        return {}
    context = {
        "user_role": roles.role_of(user),
        "can_operate": roles.has_role(user, roles.OPERATOR),
        "can_administer": roles.has_role(user, roles.ADMIN),
    }
    htmx = getattr(request, "htmx", None)
    if htmx and not htmx.boosted and not htmx.history_restore_request:
        return context
    from continuity import keyspace
    from dashboard.models import RedisDatabase

    down = []
    for database in RedisDatabase.objects.all():
        health = keyspace.cached_ping(database)
        if not health.ok:
            down.append((database, health))
    return {**context, "redis_down": down}
