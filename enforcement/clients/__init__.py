"""Client tools: the typed Python client, enforcementctl and enforcement-certs."""
