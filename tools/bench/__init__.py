"""The side-by-side benchmark of the hub against Mosquitto (`make bench`); see run.py."""
