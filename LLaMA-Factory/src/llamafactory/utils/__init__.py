"""Plumbing with no diffusion math in it: atomic file writes and permissions, Hub resolution."""
