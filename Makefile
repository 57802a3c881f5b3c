# The two commands: `make run` (the whole dashboard) and `make test` (the proof).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements-installed

.PHONY: run test bench check-deploy clean

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	  else echo "Python's venv module is missing. Install it with: sudo apt-get install -y python3-venv" >&2; exit 2; fi; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m dashboard.devtools.devrun

# pytest-xdist workers: one more than the cores, since much of the suite waits on servers,
# subprocesses and polls rather than computing. Each worker starts its own Postgres, redis-server
# and clusters. One process: `make test PYTEST_ARGS="-n 0 …"` (or TEST_WORKERS=0).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))

test: $(STAMP)
	$(BIN)/python -m dashboard.devtools.localservers ensure postgres redis-server chromium
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# What production runs through: DEBUG off, HTTPS on, a real secret key.
check-deploy: $(STAMP)
	DJANGO_DEBUG=0 DJANGO_SECRET_KEY=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))') \
	  DJANGO_ALLOWED_HOSTS=dashboard.example.com $(BIN)/python manage.py check --deploy --fail-level WARNING

clean:
	rm -rf .local staticfiles
