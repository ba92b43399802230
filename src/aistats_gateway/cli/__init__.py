"""The `aistats` command line."""
