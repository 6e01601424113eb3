"""Tiny random-weight reasoners built in code, the offline demo's reasoner, and synthetic sample studies."""
