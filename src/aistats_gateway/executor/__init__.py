"""The executor: turns validated items into upstream calls and settled results."""
