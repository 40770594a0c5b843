#!/usr/bin/env bash
# Session 31, the short call for a low budget, any card: c256 on 77110f4 against this tree (one pair), the
# offline figure, the grammar workers' GPU test (s30c.sh without the cold start).
COLD=0 PAIRS=1 bash .ab/s30c.sh
