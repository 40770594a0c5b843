import os, sys
if any("api_process" in a for a in sys.argv) or os.environ.get("PROF_ALL"):
    import cProfile
    import starlette.applications as sa
    orig = sa.Starlette.__call__
    state = {"n": 0}
    async def call(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/completions" or state["n"] >= 3:
            return await orig(self, scope, receive, send)
        state["n"] += 1; n = state["n"]
        p = cProfile.Profile(); p.enable()
        try:
            await orig(self, scope, receive, send)
        finally:
            p.disable(); p.dump_stats(f"/tmp/api{os.getpid()}-{n}.prof")
    sa.Starlette.__call__ = call
