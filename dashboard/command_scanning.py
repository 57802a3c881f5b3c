"""One mechanism for every management command argument: refuse a secret before the command
runs, and never echo it.

`RefuseSecretArguments` scans every text option (after parsing, defaults taken from the
environment included) and every argparse error message (an unknown choice or a bad number
quotes the value) with `dashboard.scanning`. A refusal names the option, never its value,
and comes before `handle`: nothing is looked up, written or run.
"""

from django.core.management.base import CommandError

from dashboard.scanning import find_secrets

ARGUMENT_REFUSAL = ("Refused, nothing written. An argument looks like a secret ({kinds}); it is not shown. "
                    "Give a 1Password reference such as op://vault/item/field where a secret is meant.")


class RefuseSecretArguments:
    """Put first in the bases of a BaseCommand whose arguments take values."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        self._option_names = {action.dest: max(action.option_strings, key=len, default=action.dest)
                              for action in parser._actions}
        report = parser.error

        def error(message):
            kinds = find_secrets(message)
            report(ARGUMENT_REFUSAL.format(kinds=", ".join(kinds)) if kinds else message)

        parser.error = error  # argparse reports through self.error, from the command line or call_command
        return parser

    def execute(self, *args, **options):
        names = getattr(self, "_option_names", {})
        values = [(names.get(dest, dest), value) for dest, value in options.items()]
        values += [("argument", value) for value in args]
        for name, value in values:
            kinds = find_secrets(value) if isinstance(value, str) else []
            if kinds:
                raise CommandError(f"{ARGUMENT_REFUSAL.format(kinds=', '.join(kinds))} ({name})")
        return super().execute(*args, **options)
