"""The base every package imports: settings, client tokens, the topic catalog and its admin.

Imports run one way: `gateway`, `streams` and the `teleprompter` shell import `core`; `core`
imports none of them.
"""
