"""Run state: every bookmark, listing progress and the run lock, and nothing else."""
