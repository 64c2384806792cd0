"""The one exception type for mistakes a user can make (bad file, bad name, bad value).

The CLI (`mathpo ...`) turns it into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """An input problem the user can fix; its message is the whole story."""
