"""A topic with records and a group of real consumers, for the group admin's tests."""

from __future__ import annotations

from tests.group_workload import workload  # noqa: F401  # the fixture, by import
