"""`python -m hub` (the console script is `mpy-hub`)."""

import sys

try:
    from hub.cli import main
except ImportError as exc:  # a Python without the project's dependencies, e.g. not the venv's
    if exc.name is None or exc.name.partition(".")[0] in ("hub", "tools"):
        raise  # our own code is broken: that traceback is for us
    print(
        f"hub: error: missing dependency {exc.name.partition('.')[0]!r}: install the project "
        "(make setup, or pip install -e .) and use .venv/bin/mpy-hub or .venv/bin/python",
        file=sys.stderr,
    )
    sys.exit(2)

sys.exit(main())
