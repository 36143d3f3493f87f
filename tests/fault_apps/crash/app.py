"""A faulty app for the harness's tests: it dies at startup, before it serves anything."""

raise RuntimeError("this app dies at startup on purpose")
