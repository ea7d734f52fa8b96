"""A worker's metrics and health, served over HTTP next to its Faust app."""
