"""The HTTP API: routes, problem answers, the app factory."""
