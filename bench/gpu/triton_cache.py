"""The Triton kernels compiled into a cache folder, one line per variant: kernel name and the
specialization it was compiled for. python triton_cache.py [CACHE_DIR] [--since LIST_FILE]
(--since: print only the variants not named in an earlier listing)."""

import json
import os
import sys
from pathlib import Path


def variants(cache: Path) -> list[str]:
    lines = []
    for meta in sorted(cache.glob("*/*.json")):
        if meta.name.startswith("__grp__"):
            continue
        data = json.loads(meta.read_text())
        attrs = {k: data[k] for k in ("constants", "attrs", "num_warps", "num_stages") if k in data}
        lines.append(
            f"{data.get('name', meta.stem)} {meta.parent.name[:10]} {json.dumps(attrs, sort_keys=True)[:300]}"
        )
    return lines


args = sys.argv[1:]
since = set()
if "--since" in args:
    i = args.index("--since")
    since = set(Path(args[i + 1]).read_text().splitlines())
    del args[i : i + 2]
cache = Path(args[0] if args else os.environ.get("TRITON_CACHE_DIR", Path.home() / ".triton/cache"))
for line in variants(cache):
    if line not in since:
        print(line)
