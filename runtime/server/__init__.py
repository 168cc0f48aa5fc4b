"""`nibble serve`: an OpenAI-compatible HTTP server with continuous batching (app.py: routes; engine.py:
the slots and the thread that runs the model; requests.py: request checking and error objects)."""
from .app import ServerConfig, create_app
from .engine import Engine, Job, QueueFull

__all__ = ["Engine", "Job", "QueueFull", "ServerConfig", "create_app"]
