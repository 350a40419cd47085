"""Helpers for scripts/bench_ingest.py: event generation, body pools, wrk driving."""
