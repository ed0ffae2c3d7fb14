"""Maintenance jobs: verify, build and split; each cancellable and reporting progress."""
