"""Work that spans Redis, Postgres and the audit log, one module per operation
(`review`, `review_requests`, `purge`, `configuration`…). Keyword-only functions returning
result dataclasses."""
