#!/usr/bin/env bash
# plan_sim.sh — planner simulation table (see bench/plan_sim.c); JSON to bench/results/plan_sim.json.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build bench/results
gcc -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -O2 -Isrc bench/plan_sim.c src/plan.c src/err.c -lm -o build/plan_sim
build/plan_sim bench/results/plan_sim.json "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
