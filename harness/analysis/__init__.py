"""Analysis: pure functions of a run (statistics, intervals, attribution, ladders).

No clock, no process, no database: the same run.json always gives the same figures.
"""
