"""The web dashboard served by the gateway itself at `/ui/` (routes.py; the page's files in static/)."""
