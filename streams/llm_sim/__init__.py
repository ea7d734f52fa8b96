"""The built-in LLM simulator: an OpenAI-compatible endpoint for offline use and benchmarks."""
