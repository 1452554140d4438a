"""One router per route file."""
