"""One conversation from the topics: its timeline (`replay`) and what-if re-runs (`--through`)."""
