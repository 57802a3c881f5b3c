"""Views of the records side, one module per area (access: the audit log and users)."""
