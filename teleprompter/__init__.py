"""teleprompter: reply suggestions for reps on live calls, streamed through Kafka."""

__version__ = "0.1.0"
