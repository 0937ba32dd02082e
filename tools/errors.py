"""The one exception the tools' command line turns into `tools: error: ...` and exit code 2."""


class ToolError(Exception):
    """A mistake the user can fix, or a failure the message explains; never a traceback."""
