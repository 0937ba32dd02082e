# Commands from the hub on d/<id>/c, each answered on d/<id>/r with the command's id.
# Imported for each command and unloaded after it (node/app.py), so the heap between commands
# holds none of it. A settings update is node/trial.py's, an app update offer node/otaoffer.py's.
#
# A command runs once per id: the hub sends one again when its reply may have been lost (a
# node of the cluster crashed), and a duplicate gets the reply the first one got
# (App.answer_again, from the last replies App.reply keeps). A reboot keeps them in flash
# (answers.json: written before the app reboots itself, never per command; a new file renamed
# over the old one, so a power cut leaves one or the other), so a `reboot` or a settings update
# sent again after the reboot it caused does not run again. Id 0 is no id: a fixed payload
# (Home Assistant's switch commands, hub/hass.py) reuses it, and every one of them runs.
import json
import os

from node import VERSION

ANSWERS_FILE = "answers.json"
_TMP = "answers.json.tmp"


def saved():
    # The replies the last reboot kept, [[id, reply], ...] ([] if none or unreadable).
    for path in (ANSWERS_FILE, _TMP):  # the tmp file alone: power lost between remove, rename
        try:
            with open(path) as f:
                kept = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(kept, list) and all(
                isinstance(k, list) and len(k) == 2 and isinstance(k[1], str) for k in kept):
            return kept
    return []


def save(kept):
    # From App.reboot: nothing is written when the file holds these already.
    if kept == saved():
        return
    with open(_TMP, "w") as f:
        json.dump(kept, f)
    try:
        os.rename(_TMP, ANSWERS_FILE)
    except OSError:  # FAT cannot rename over a file: remove it first (saved() finds the tmp)
        os.remove(ANSWERS_FILE)
        os.rename(_TMP, ANSWERS_FILE)


def handle(app, msg):
    try:
        cmd = json.loads(msg)
        command_id = cmd["id"]
        op = cmd["op"]
    except (ValueError, KeyError, TypeError):
        app.reply(None, False, error="a command is JSON with 'id' and 'op'")
        return
    if app.answer_again(command_id):  # sent again: answered again, not run twice
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
