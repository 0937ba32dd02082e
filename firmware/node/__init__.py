VERSION = "0.1.0"


def drop(*names):
    # Unloads node modules that are needed once in a while (the settings checks, the steps of
    # an update): their code goes back to the heap, and the next import loads them again.
    import sys

    for name in names:
        sys.modules.pop("node." + name, None)
        globals().pop(name, None)
