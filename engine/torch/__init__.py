"""torch integration: datasets whose items go through the managed cache (torch is optional)."""
