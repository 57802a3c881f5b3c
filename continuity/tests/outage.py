"""Postgres going away on purpose: the test run's own Postgres stopped and started again
from a helper thread while a job runs (`outage` fixture in conftest.py)."""

import threading
import time

from dashboard import postgres


class Outage:
    """Stops and starts the test Postgres; Postgres is running again when the test ends."""

    def __init__(self, server):
        self.server, self.down, self.threads = server, False, []

    def stop(self):
        self.server.stop()
        self.down = True

    def start(self):
        if self.down:
            self.server.start()
            self.down = False
        postgres.forget_connection()

    def start_after(self, seconds):
        thread = threading.Thread(target=lambda: (time.sleep(seconds), self.start()), daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop_when(self, condition, *, back_after=None, timeout=30):
        """In a helper thread: stop Postgres as soon as `condition()` holds; with
        `back_after`, start it again that many seconds later."""
        def watch():
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not condition():
                time.sleep(0.005)
            self.stop()
            if back_after is not None:
                time.sleep(back_after)
                self.start()

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self):
        for thread in self.threads:
            thread.join(timeout=60)
