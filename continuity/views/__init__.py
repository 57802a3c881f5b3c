"""Views of the live keyspace side, one module per area (overview, browser, jobs…)."""
