"""Filters that decide which synthetic candidates to keep, and metrics over data and models."""
