"""HTTP routes, one module per group."""

from pyinfer.server.routes import chat, completions, health, metrics, models, responses, tokenize, ui

ROUTERS = [r.router for r in (chat, completions, responses, models, health, metrics, tokenize, ui)]
