"""The bottom of the house: errors, settings dataclasses and the plugin registry.

`benchmark` (the harness), `methods`, `metrics` and `reports` import from here; nothing here
imports any of them, so a plugin can be used and tested without the harness.
"""
