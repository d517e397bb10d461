"""The engineers' topology view: what it draws, its live feed and its HTTP server."""
