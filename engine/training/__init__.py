"""The supervised training: launching, progress, ETA, OOM recognition, the reporting API."""
