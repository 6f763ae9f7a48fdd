"""Writes. Each service is `<entity>_<action>`, keyword-only, atomic."""
