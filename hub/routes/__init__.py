"""Routes: messages selected by topic filter (and optionally device or sensor) delivered to a
webhook, a database or another topic, at least once, in order per device, from a durable
queue (README, "Routes").

spec.py checks a ``[[routes]]`` table; queue.py keeps the queues, dead letters and counters
(``routes.sqlite3`` in the data dir); targets.py delivers; service.py runs them in the hub;
api.py and cli.py list them and their dead letters.
"""
