"""The `hs` command line."""
