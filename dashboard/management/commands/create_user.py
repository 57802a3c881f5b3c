"""manage.py create_user: an account with a role, from the command line.

The password never travels in the command line (where `ps`, shell history and process
logs would keep it): it is typed at a prompt (twice, not echoed) or read from a file
(`--password-file PATH`, or `-` for standard input, e.g. from a secret manager's CLI).
"""

import getpass
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from dashboard import operations, roles
from dashboard.command_scanning import RefuseSecretArguments


class Command(RefuseSecretArguments, BaseCommand):
    help = ("Create a dashboard account with a role (viewer, operator or admin). The password is typed at a "
            "prompt or read from --password-file; it is never an argument. Audited as user.create.")

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        report = parser.error

        def error(message):
            # argparse quotes what it did not recognize: a password typed as an argument by mistake.
            if message.startswith("unrecognized arguments"):
                message = ("unrecognized arguments (not shown). A password is never an argument: type it at the "
                           "prompt or give --password-file PATH.")
            report(message)

        parser.error = error
        return parser

    def add_arguments(self, parser):
        parser.allow_abbrev = False  # `--password X` must not pass for --password-file X
        parser.add_argument("--username", required=True)
        parser.add_argument("--role", required=True, choices=roles.ROLES)
        parser.add_argument("--email", default="")
        parser.add_argument("--password-file", metavar="PATH",
                            help="read the password from this file's first line ('-': standard input)")
        parser.add_argument("--one-time", action="store_true",
                            help="the password only opens 'set your own password' at the first sign-in")

    def handle(self, *args, username, role, email, password_file, one_time, **options):
        password = self._from_file(password_file) if password_file else self._prompt()
        try:
            user = operations.create_account(username=username, email=email, role=role, password=password,
                                             one_time=one_time, actor_label="create_user")
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"create_user: created {role} '{user.username}'"
                          + (" (sets their own password at the first sign-in)." if one_time else "."))

    @staticmethod
    def _from_file(path):
        try:
            if path == "-":
                line = sys.stdin.readline()
            else:
                with open(path, encoding="utf-8") as handle:
                    line = handle.readline()
        except OSError as exc:
            raise CommandError(f"Cannot read the password file: {exc.strerror}.") from None
        password = line.rstrip("\r\n")
        if not password:
            raise CommandError("The password file's first line is empty.")
        return password

    @staticmethod
    def _prompt():
        if not sys.stdin.isatty():
            raise CommandError("No terminal to ask for the password: give --password-file PATH (or - for standard "
                               "input).")
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Password (again): "):
            raise CommandError("The two passwords differ; nothing was created.")
        if not password:
            raise CommandError("An empty password; nothing was created.")
        return password
