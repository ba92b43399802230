"""Pure domain logic: no I/O imports, time passed in as arguments."""
