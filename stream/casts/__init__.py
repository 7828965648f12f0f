"""Cast portraits: the built-in casts, the registry of added ones, their checks and their preparation into a
texture the recasters draw with."""
