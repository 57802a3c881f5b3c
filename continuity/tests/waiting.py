"""Waiting on state, not on the clock: tests that drive a real worker poll for the outcome."""

import time


def wait_for(check, timeout, what, *, every=0.05):
    """`check()`'s first truthy value within `timeout` seconds, else AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
