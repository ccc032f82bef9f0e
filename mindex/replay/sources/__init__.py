"""Replay sources. Every module here defines one ``ReplaySource`` subclass decorated with
``@register_source``; ``mindex.replay.base.registered_sources`` imports them all, so a new source needs no
other change."""
