"""Reporting: files from a run and its analysis (matrix.md, matrix.csv, charts, the README section).

Never imports ``harness.measure``: rendering starts no process and reads no clock.
"""
