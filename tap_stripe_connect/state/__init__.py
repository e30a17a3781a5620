"""Run state: every bookmark, listing progress and the run's locks, and nothing else."""
