# boot.py runs on every boot, deep-sleep wake included. Keep it empty: main.py starts the app.
