"""Upstream providers behind one protocol, and the routing of models to them."""
