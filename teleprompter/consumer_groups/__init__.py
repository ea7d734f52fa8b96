"""Consumer groups for operators: state, lag with Burrow's status, and offset resets."""
