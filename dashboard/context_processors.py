from dashboard import roles


def dashboard(request):
    """Role of the signed-in user and the reachability of each monitored Redis, for the
    navigation bar and the 'Redis unreachable' banner."""
    user = getattr(request, "user", None)
    if not user or not user.is_authenticated:
        return {}
    from continuity import keyspace
    from dashboard.models import RedisDatabase

    down = []
    for database in RedisDatabase.objects.all():
        health = keyspace.cached_ping(database)
        if not health.ok:
            down.append((database, health))
    role = roles.role_of(user)
    return {
        "user_role": role,
        "can_operate": roles.has_role(user, roles.OPERATOR),
        "can_administer": roles.has_role(user, roles.ADMIN),
        "redis_down": down,
    }
