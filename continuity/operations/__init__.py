"""Work that spans Redis, Postgres and the audit log, one module per operation
(`review`, `purge`). Keyword-only functions returning result dataclasses."""
