"""The OpenAI-compatible HTTP server. It never imports the engine's torch code: see core_client.py."""
