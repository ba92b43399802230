"""Use cases behind the API: what a route means, independent of HTTP."""
