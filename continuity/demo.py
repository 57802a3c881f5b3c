"""Lucia-like keyspaces: for `make run`'s demo data and for the benchmarks.

A spec stream describes keys across the five namespaces with realistic payloads and
TTLs, plus a few percent of each violation a TTL review must find: no TTL, TTL above the
namespace maximum, oversized payloads, a wrong type, keys under the key prefix in no
namespace, and foreign keys outside the prefix.
"""

import json
import random
from dataclasses import dataclass

# Share of keys per namespace, roughly what a live Lucia shows.
NAMESPACE_MIX = {"session": 0.40, "distress": 0.10, "focus": 0.20, "action": 0.15, "rate": 0.15}
# TTL ranges (seconds) inside each namespace's policy.
TTL_RANGES = {"session": (15 * 60, 60 * 60), "distress": (5 * 60, 6 * 3600), "focus": (3600, 24 * 3600),
              "action": (60, 3600), "rate": (10, 3600)}
MAX_TTL = {"session": 3600, "distress": 6 * 3600, "focus": 24 * 3600, "action": 3600, "rate": 3600}
VIOLATIONS = ("no_ttl", "ttl_above_max", "oversized", "wrong_type", "unknown_namespace", "foreign")


@dataclass(frozen=True)
class KeySpec:
    key: bytes
    type: str  # "string" or "hash"
    value: object  # bytes for strings, dict for hashes
    ttl_seconds: int | None
    violation: str | None = None


def _payload(namespace, rng, ident):
    if namespace == "session":
        return json.dumps({"operator": f"op-{rng.randrange(40)}", "channel": rng.choice(["web", "sms", "voice"]),
                           "turns": rng.randrange(1, 30), "context": "x" * rng.randrange(100, 900)}).encode()
    if namespace == "distress":
        return {"stage": str(rng.randrange(0, 4)), "streak": str(rng.randrange(1, 12)), "last_signal": f"sig-{ident}"}
    if namespace == "focus":
        return json.dumps({"follow_up": f"ticket-{rng.randrange(10**6)}", "note": "y" * rng.randrange(50, 400)}).encode()
    if namespace == "action":
        return json.dumps({"lock": f"worker-{rng.randrange(8)}", "action": rng.choice(["notify", "escalate", "handoff"])}).encode()
    return str(rng.randrange(1, 120)).encode()


def lucia_keyspace(n, *, seed=7, violation_rate=0.02, prefix=b"lucia:"):
    """Yield `n` KeySpecs; each violation kind takes about `violation_rate` of the keys."""
    rng = random.Random(seed)
    names = list(NAMESPACE_MIX)
    weights = list(NAMESPACE_MIX.values())
    for i in range(n):
        roll = rng.random()
        kind = VIOLATIONS[int(roll / violation_rate)] if roll < violation_rate * len(VIOLATIONS) else None
        ident = f"{i:08x}-{rng.randrange(16**6):06x}"
        if kind == "foreign":
            yield KeySpec(f"celeryish:other-app:{ident}".encode(), "string", b"not ours", 3600, kind)
            continue
        if kind == "unknown_namespace":
            yield KeySpec(prefix + f"legacy:{ident}".encode(), "string", b"orphan", None, kind)
            continue
        namespace = rng.choices(names, weights)[0]
        key = prefix + f"{namespace}:{ident}".encode()
        value = _payload(namespace, rng, ident)
        kind_type = "hash" if isinstance(value, dict) else "string"
        low, high = TTL_RANGES[namespace]
        ttl = rng.randint(low, high)
        if kind == "no_ttl":
            ttl = None
        elif kind == "ttl_above_max":
            ttl = MAX_TTL[namespace] * rng.randint(2, 10)
        elif kind == "oversized":
            value = b"z" * rng.randint(20_000, 60_000)
            kind_type = "string"
        elif kind == "wrong_type":
            value = {"unexpected": "hash"} if kind_type == "string" else b"unexpected string"
            kind_type = "hash" if kind_type == "string" else "string"
        yield KeySpec(key, kind_type, value, ttl, kind)


def write_keyspace(client, specs, *, batch=1000):
    """Write specs with pipelines of `batch` keys. Returns the number of keys written."""
    written = 0
    pipe = client.pipeline(transaction=False)
    for spec in specs:
        if spec.type == "hash":
            pipe.hset(spec.key, mapping=spec.value)
            if spec.ttl_seconds:
                pipe.expire(spec.key, spec.ttl_seconds)
        else:
            pipe.set(spec.key, spec.value, ex=spec.ttl_seconds)
        written += 1
        if written % batch == 0:
            pipe.execute()
    pipe.execute()
    return written


def write_demo_keyspace(store, client, specs):
    """The demo keyspace: in-policy keys through the continuity store adapter (so the
    demo exercises the same policy checks as Lucia), deliberate violations written raw
    with `write_keyspace`. Returns (through the adapter, raw)."""
    adapted, raw = 0, []
    for spec in specs:
        if spec.violation is None:
            store.put_key(spec.key, spec.value, ttl_seconds=spec.ttl_seconds, as_hash=spec.type == "hash")
            adapted += 1
        else:
            raw.append(spec)
    return adapted, write_keyspace(client, raw)
