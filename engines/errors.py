"""The one family of errors that are the caller's mistake, not ours: a missing or damaged file, an option that
does not fit, an input the product cannot use. Every layer's own error for such a case derives from
``InputError``, so the command line turns any of them into its one-line message and exit status 2 (anything
else is an internal error: exit 1 with a traceback in the log). It lives in the bottom layer, with no imports,
so every layer can use it.
"""


class InputError(Exception):
    """A caller's mistake; ``str()`` says which file or option and what is wrong with it."""
