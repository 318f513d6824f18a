"""Agents that validate receipt metadata."""
