"""Stream processing: Faust agents from transcript to streamed suggestion."""
