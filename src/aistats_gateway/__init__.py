"""AI Stats Gateway: a self-hostable LLM gateway built around an OpenAI-compatible Batch API.

The server lives here; the client SDK is the separate import package `aistats`.
"""

__version__ = "0.1.0"
