"""Benchmarks as lists of tasks."""
