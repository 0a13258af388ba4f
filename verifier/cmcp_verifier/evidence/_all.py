"""Imports every evidence module so that each registers itself."""
