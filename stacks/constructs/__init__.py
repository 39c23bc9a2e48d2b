"""L3 constructs: each does one architectural task and exposes what it created."""
