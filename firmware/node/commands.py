# Commands from the hub on d/<id>/c, each answered on d/<id>/r with the command's id.
# Imported on the first command, so a device that gets none never pays for it.
import gc
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
    elif op == "settings":
        # Answered after the reboot: ok once the device reconnects with the new settings,
        # or an error once it has rolled back to the old ones. The checks' code is loaded for
        # it (node/trial.py, node/config.py), into a heap collected first.
        gc.collect()
        from node import config, trial

        try:
            trial.begin_trial(command_id, cmd.get("set"))
        except config.ConfigError as exc:
            app.reply(command_id, False, error=str(exc))
            import node

            node.drop("trial", "config")  # refused: the checks' code need not stay
            return
        app.reboot_soon(0, 200)
    else:
        app.reply(command_id, False, error="unknown op %r" % op)
