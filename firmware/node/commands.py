# Commands from the hub on d/<id>/c, each answered on d/<id>/r with the command's id.
# Imported for each command and unloaded after it (node/app.py), so the heap between commands
# holds none of it. A settings update is node/trial.py's, an app update offer node/otaoffer.py's.
import json

from node import VERSION


def handle(app, msg):
    try:
        cmd = json.loads(msg)
        command_id = cmd["id"]
        op = cmd["op"]
    except (ValueError, KeyError, TypeError):
        app.reply(None, False, error="a command is JSON with 'id' and 'op'")
        return
    if op == "ping":
        app.reply(command_id, True, version=VERSION)
    elif op == "read":
        app.read_now()
        app.reply(command_id, True)
    elif op == "period":
        seconds = cmd.get("s")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= 86400:
            app.reply(command_id, False, error="'s' must be whole seconds from 1 to 86400")
            return
        app.period_ms = seconds * 1000
        app.read_now()  # the new period starts now
        app.reply(command_id, True, s=seconds)
    elif op == "out":
        name = cmd.get("name")
        value = cmd.get("v")
        if name not in app.outputs:
            app.reply(command_id, False, error="unknown output %r; this board has %s"
                      % (name, sorted(app.outputs) or "none"))
        elif value not in (0, 1) or isinstance(value, bool):
            app.reply(command_id, False, error="'v' must be 0 or 1")
        else:
            out = app.outputs[name]
            out.set(value)
            app.reply(command_id, True, name=name, v=out.get())
    elif op == "reboot":
        app.reboot_soon(app.reply(command_id, True))
    else:
        app.reply(command_id, False, error="unknown op %r" % op)
