"""The benchmark suite: `python -m bench` (bench/run.py); each section also runs on its own
as `python -m bench.<module>` from the repository's root."""
