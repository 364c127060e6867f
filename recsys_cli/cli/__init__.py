"""The `recsys` command line (see app.py)."""
