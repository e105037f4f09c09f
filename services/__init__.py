"""Baton's workers and the pieces they share (bus, settings, logs, runner) and the SDK."""
