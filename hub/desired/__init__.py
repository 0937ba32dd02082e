"""Desired and reported state per device and per group (issue #20, item 1): the documents
(``store.py``), what may be in one (``document.py``) and the hub's service that sends each
device its delta (``service.py``). Groups are ``hub/groups.py``."""
