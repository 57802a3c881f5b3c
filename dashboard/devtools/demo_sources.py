"""`make run`'s demo records for the sources of truth (`dashboard.devtools.sourceservers`):
references on the seeded secrets and a recorded rotation, the `lucia` record's region and its
Upstash link. Then the demo shows, once `check_sources` ran: a renamed item (reference broken),
a changed item (changed, not recorded), a checked one, and a region drift.

Idempotent and never overwrites what someone set: a reference only where none is, a rotation
only where none is recorded, the region only when blank, the link only when missing. Audited
as "make run demo". Run with the dashboard's environment: `python -m dashboard.devtools.demo_sources`.
"""

import os
import sys
from datetime import timedelta


def main(connect=True, upstash=True):
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    django.setup()
    from django.db import transaction
    from django.utils import timezone

    from dashboard import audit, operations
    from dashboard.devtools.sourceservers import DEMO_LINK, DEMO_RECORD, DEMO_SECRETS
    from dashboard.models import RedisDatabase, Secret, UpstashLink

    actor = {"actor_label": "make run demo", "source": "cli"}
    now = timezone.now()
    if connect:
        for name, (reference, rotated_days_ago) in DEMO_SECRETS.items():
            secret = Secret.objects.filter(name=name).first()
            if secret is None:
                continue
            if not secret.reference:
                with transaction.atomic():
                    secret.set_reference(reference)
                    secret.save()
                    audit.record(action="secret.edit", target=secret, before={"reference": ""},
                                 after={"reference": reference}, note="make run's 1Password demo", **actor)
            if rotated_days_ago is not None and not secret.rotations.exists():
                operations.record_rotation(secret=secret, verified_how="make run's demo", actor=None,
                                           rotated_at=now - timedelta(days=rotated_days_ago), **actor)
    database = RedisDatabase.objects.filter(name="lucia").first()
    if upstash and database is not None:
        with transaction.atomic():
            if not database.region:
                database.region = DEMO_RECORD["region"]
                database.save(update_fields=["region", "updated_at"])
                audit.record(action="database.edit", target=database, before={"region": ""}, after=DEMO_RECORD,
                             note="make run's Upstash demo", **actor)
            if not UpstashLink.objects.filter(database=database).exists():
                link = UpstashLink.objects.create(database=database, **DEMO_LINK)
                audit.record(action="upstash_link.edit", target=link, after=audit.snapshot(link),
                             note="make run's Upstash demo", **actor)
    return 0


if __name__ == "__main__":
    sys.exit(main(connect="--no-1password" not in sys.argv, upstash="--no-upstash" not in sys.argv))
