"""Iterative magnitude pruning: IMP-WR, IMP-LRR, IMP-FT.  The algorithm (run.py) drives the
levels (levels.py) planned by plan.py, records them (level_files.py, level_report.py), runs
their analyses (analysis.py) and, after the last level, the controls (controls.py) and the
ticket (finish.py); packed.py trains M copies at once, prac.py the PrAC data subsets.  Imports
run one way: run → packed → finish → controls → analysis → level_files / plan."""
