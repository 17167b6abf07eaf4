"""The worker: claim -> permit -> send -> record."""
