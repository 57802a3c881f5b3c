import getpass

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError

from dashboard import operations
from dashboard.command_scanning import RefuseSecretArguments
from dashboard.models import Secret


class Command(RefuseSecretArguments, BaseCommand):
    help = ("Record a rotation of a secret, with the same validation and audit as the secret page. "
            "Writes nothing and exits non-zero on refusal.")

    def add_arguments(self, parser):
        parser.add_argument("--secret", required=True, help="Secret name, e.g. lucia-rest-token")
        parser.add_argument("--reference", required=True,
                            help="1Password reference of the new value (op://vault/item/field); may be the same item.")
        parser.add_argument("--verified", default="", help="How the new value was verified.")
        parser.add_argument("--note", default="")
        parser.add_argument("--by", default="", help="Username recorded as the actor; must hold the operator role. "
                            "Without it the rotation is recorded as cli:<system user>.")

    def handle(self, *args, secret, reference, verified, note, by, **options):
        try:
            record = Secret.objects.get(name=secret)
        except Secret.DoesNotExist:
            raise CommandError(f"No secret named {secret!r}. See manage.py rotation_status.") from None
        actor = None
        if by:
            try:
                actor = get_user_model().objects.get(username=by)
            except get_user_model().DoesNotExist:
                raise CommandError(f"No user named {by!r}.") from None
        try:
            result = operations.record_rotation(
                secret=record, reference=reference, verified_how=verified or "recorded from the command line",
                note=note, actor=actor, actor_label=f"cli:{getpass.getuser()}", source="cli")
        except PermissionDenied as error:
            raise CommandError(str(error)) from None
        except ValidationError as error:
            # Messages never quote the input, so a pasted secret does not reach the terminal or logs.
            details = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in error.message_dict.items())
            raise CommandError(f"Refused, nothing written. {details}") from None
        self.stdout.write(f"Recorded rotation of {result.secret.name}: {result.status_before} -> {result.status_after}; "
                          f"next due {result.secret.next_due():%Y-%m-%d}.")
