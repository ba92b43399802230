"""Webhooks: which events a batch change causes, signing, the SSRF guard, and delivery."""
