"""`python -m dashboard.devtools.idp.serve --port P --data DIR`: the demo OpenID provider,
its own process. Migrates its SQLite file, makes its RSA signing key once, prints `ready` and
serves on 127.0.0.1 until stopped."""

import argparse
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True, help="directory for its SQLite file")
    args = parser.parse_args(argv)
    os.makedirs(args.data, exist_ok=True)
    os.environ["DJANGO_SETTINGS_MODULE"] = "dashboard.devtools.idp.settings"
    os.environ["IDP_DATA_DIR"] = args.data

    import django

    django.setup()
    from django.core.management import call_command
    from django.core.servers.basehttp import run
    from django.core.wsgi import get_wsgi_application
    from oidc_provider.models import RSAKey

    call_command("migrate", verbosity=0, interactive=False)
    if not RSAKey.objects.exists():
        call_command("creatersakey", verbosity=0)
    application = get_wsgi_application()
    print(f"ready on http://127.0.0.1:{args.port}/openid", flush=True)
    run("127.0.0.1", args.port, application, threading=True)


if __name__ == "__main__":
    sys.exit(main())
