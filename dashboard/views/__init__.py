"""Views of the records side, one module per area (access: home, audit, users, health)."""
