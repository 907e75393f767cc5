"""User-facing errors: the CLI turns these into one clear line and exit code 2."""


class UserError(Exception):
    """Something the user can fix (bad path, bad recipe key, unreadable data)."""


class RecipeError(UserError):
    """A recipe file or override is invalid."""


class DataError(UserError):
    """Input data is missing or unreadable; the message names the file and the problem."""
