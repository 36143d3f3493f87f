"""Measuring: starts processes (servers, PostgreSQL, the load generator, valgrind, py-spy), writes run.json."""
