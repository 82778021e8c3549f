"""Reliability and security tests: server faults, crashes, hostile input, concurrency, secrets."""
