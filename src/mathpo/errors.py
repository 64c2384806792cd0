"""The one exception type for mistakes a user can make (bad file, bad name, bad value).

The CLI (`mathpo ...`) turns it into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback. `require` turns a missing optional dependency into such a line, naming
the extra that installs it.
"""


class UserError(Exception):
    """An input problem the user can fix; its message is the whole story."""


def require(module: str, extra: str, what: str, load: bool = True):
    """Import an optional dependency (or, with load=False, only check that it is installed), or
    say in one line which extra installs it: a UserError, so the CLI prints it and exits 2.

        gr = require("gradio", "serve", "mathpo serve")
        # mathpo serve: error: mathpo serve needs the 'serve' extra (No module named 'gradio'):
        #   pip install 'mathpo[serve]'    (on one line)
    """
    import importlib
    import importlib.util

    try:
        if load:
            return importlib.import_module(module)
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named '{module}'")
        return None
    except (ImportError, ValueError) as e:  # missing, a dependency of it missing, or blocked (find_spec: ValueError)
        reason = " ".join(str(e).split())
        raise UserError(f"{what} needs the '{extra}' extra ({reason}): pip install 'mathpo[{extra}]'") from None
