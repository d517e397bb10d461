"""Persistence: the SQL store (SQLite or PostgreSQL), its record codec and its migrations."""
