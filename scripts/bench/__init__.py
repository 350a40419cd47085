"""Helpers for the benchmark scripts: event generation, body pools, wrk driving, process
trees, stacksift deployments and freshness probes."""
