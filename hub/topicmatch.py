"""MQTT topic-filter rules: well-formed filters, a filter against a topic, a filter within a
filter. Pure functions, no imports: the broker, the security policy and the topic contract
(hub/topics.py, which re-exports them) share this one copy."""

from __future__ import annotations


def check_topic_filter(topic_filter: str) -> bool:
    """True when the filter is well formed ('#' last and alone, '+' alone in its level)."""
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def filter_matches(topic_filter: str, topic: str) -> bool:
    """One filter against one topic ('+' and '#' never match a first level starting '$')."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def filter_covers(allowed: str, requested: str) -> bool:
    """True when every topic the requested filter can match is matched by the allowed one."""
    a_levels = allowed.split("/")
    r_levels = requested.split("/")
    for i, a in enumerate(a_levels):
        if a == "#":
            return True
        if i >= len(r_levels):
            return False
        r = r_levels[i]
        if r == "#" or (a != "+" and (r == "+" or a != r)):
            return False
    return len(a_levels) == len(r_levels)
