#!/bin/sh
# AWS calls per ECS deploy (by kind) for apps of 1, 5 and 20 process types, first deploy
# and unchanged redeploy, and deploy wall time against moto with the calls overlapped
# versus forwarded one at a time (with moto's latency and with 50 ms added per call).
# Prints Markdown tables; the results are in docs/benchmarks.md. A debug build is
# enough: the time is in the AWS calls (the script builds it, first time ~5 min).
#
#   bench/ecs-calls.sh            # 3 repetitions per timing (~2 min)
#   EMPIRE_BENCH_REPS=5 bench/ecs-calls.sh
#
# It starts moto with scripts/moto.sh (port 5555, idempotent) unless
# EMPIRE_TEST_AWS_ENDPOINT points at one, and runs the ignored test
# deployer/tests/ecs_bench.rs, which makes its own VPC, load balancers, zones and
# cluster in moto and removes the apps it deploys.
set -eu
cd "$(dirname "$0")/.."
EMPIRE_TEST_AWS_ENDPOINT=${EMPIRE_TEST_AWS_ENDPOINT:-$(scripts/moto.sh 5555)}
export EMPIRE_TEST_AWS_ENDPOINT
cargo test -p empire-deployer --test ecs_bench -- --ignored --nocapture --test-threads 1 2>/dev/null |
    sed -n '/^## /,$p' | grep -v '^test result\|^test bench'
