"""The controller process: settings, logs, signals, systemd readiness, leading and following,
live reload."""
