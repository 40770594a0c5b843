#!/usr/bin/env bash
# Call 1 of 3 on whichever card comes (stages vLLM's part aa): issue 24's compact targets as the machine's
# first server (.ab/s26q.sh: ready on an empty Triton cache, cold start c32 twice, c256 with 2 API
# processes, batch 1 served, the offline figure), with the start-up log's phases.
mkdir -p /tmp/vb && cp .peer/vllm/part.* /tmp/vb/ 2>/dev/null
git log -1 --format=%h 2>/dev/null; date +%T
ANY_GPU=1 bash .ab/s26q.sh
grep -v "pyinfer.access" /tmp/s.log | grep -E "loaded|KV cache|compiled|captured|chose|warmed|core ready" | cut -c12-200
date +%T
