"""Watched directories: caches written by other code, kept under their limit from outside."""
