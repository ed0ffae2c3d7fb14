"""The headless engine process: Unix-socket server, versioned protocol, clients, snapshots."""
