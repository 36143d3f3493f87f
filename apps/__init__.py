"""The apps under test: one folder per framework, each exposing the same insert endpoint (see README.md)."""
