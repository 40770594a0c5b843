import cProfile, sys, os
import pyinfer.server.app as app_mod
from pyinfer.cli import main

class Prof:
    def __init__(self, app):
        self.app = app; self.n = 0
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != os.environ.get("PROF_PATH", "/v1/completions") or self.n >= 3:
            return await self.app(scope, receive, send)
        self.n += 1; n = self.n
        p = cProfile.Profile(); p.enable()
        try:
            await self.app(scope, receive, send)
        finally:
            p.disable(); p.dump_stats(f"/tmp/first{n}.prof")

orig = app_mod.create_app
def create_app(*a, **k):
    app = orig(*a, **k); app.add_middleware(Prof); return app
app_mod.create_app = create_app
sys.argv = ["pyinfer", "serve", "--port", "8011"]
main()
