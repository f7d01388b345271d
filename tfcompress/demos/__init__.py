"""Rows that each compression method adds to `tfcompress demo`."""
