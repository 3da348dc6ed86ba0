"""Measurements of "Unmasking the Lottery Ticket Hypothesis" (REFERENCE.md §7): error barriers
along linear paths, Hessian spectra at a solution, pruning projection distances, 2-D error
slices, and the reports and plots over finished runs.  Importable on their own; the IMP runner
calls them when the corresponding options are set."""
