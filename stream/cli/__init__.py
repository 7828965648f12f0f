"""The `recast` command line."""
