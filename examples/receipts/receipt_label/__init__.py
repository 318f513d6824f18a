"""Labelling of receipt words."""
