"""Phone calls: a carrier's media-stream WebSocket turned into a conversation's two voices."""
