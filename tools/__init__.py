"""Data tools around create_pretraining_data.py; run them from the repo root as `python -m tools.X`."""
