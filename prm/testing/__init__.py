"""Test doubles that tests and benchmarks share: a loopback fake of the Anthropic Messages API."""
