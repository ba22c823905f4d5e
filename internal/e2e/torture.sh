#!/usr/bin/env bash
# torture runs e2e tests RUNS times under load, for make torture-failover and
# make torture-faults. Each run runs each -test.run pattern of TESTS (space
# separated) once, from one test binary built at the start (with -race if
# RACE=1), beside cmd/contend: CPU goroutines that spin and DISK writers
# that fsync 1 MiB over and over in the temporary directory (where the
# tests' Redis keeps its AOF). The burners stop when the script ends, or
# after MAX_TIME. Run N's output goes to $LOGS/run-N.log. At the end it sums
# the tests' RESULT lines by durability mode (lost, doubled, refused calls,
# the slowest failover), and counts the passes and failures, naming what
# failed. Run it from the repository's root (make does).
set -u
NAME=${NAME:-torture}
RUNS=${RUNS:-5}
GO=${GO:-go}
TESTS=${TESTS:?TESTS: the -test.run patterns to run}
CPU=${CPU:-2}
DISK=${DISK:-0}
RACE=${RACE:-0}
MAX_TIME=${MAX_TIME:-3h}
LOGS=${LOGS:-$PWD/bin/$NAME}
mkdir -p "$LOGS" || exit 1
rm -f "$LOGS"/run-*.log
# The patterns, split on spaces and never globbed.
read -r -a tests <<<"$TESTS"
race=""
[ "$RACE" = 1 ] && race=-race
$GO build -o "$LOGS/contend" ./cmd/contend || exit 1
$GO test -c $race -o "$LOGS/e2e.test" ./internal/e2e || exit 1
"$LOGS/contend" -cpu "$CPU" -disk "$DISK" -for "$MAX_TIME" &
burner=$!
trap 'kill $burner 2>/dev/null' EXIT INT TERM
echo "$NAME: RUNS=$RUNS under $CPU CPU and $DISK disk burners; logs in $LOGS"
pass=0 fail=0 failed=""
for run in $(seq 1 "$RUNS"); do
	log="$LOGS/run-$run.log"
	for t in "${tests[@]}"; do
		if (cd internal/e2e && "$LOGS/e2e.test" -test.run "$t" -test.count=1 -test.timeout 15m -test.v) >"$log.part" 2>&1; then
			status=PASS pass=$((pass + 1))
		else
			status=FAIL fail=$((fail + 1))
			what=$(grep -o -- '--- FAIL: [A-Za-z0-9_/]*' "$log.part" | sed 's/--- FAIL: //' | tr '\n' ' ')
			failed="$failed run$run:[${what:-$t}]"
		fi
		echo "$status $t run $run"
		grep -o 'RESULT .*' "$log.part" | sed 's/^/    /'
		[ "$status" = FAIL ] && grep -E '^\s+\S+_test\.go:[0-9]+: ' "$log.part" | grep -v RESULT | head -5 | sed 's/^/    /'
		cat "$log.part" >>"$log" && rm "$log.part"
	done
done
# Totals over every RESULT line, by durability mode (the Sentinel and
# Cluster tests run strict): lost, doubled, refused calls, and the slowest
# failover.
cat "$LOGS"/run-*.log | grep -o 'RESULT .*' | awk -v name="$NAME" '
	{ delete v; for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
	{ m = ("mode" in v) ? v["mode"] : "strict"; n[m]++; lost[m] += v["lost"]; doubled[m] += v["doubled"]
	  refused[m] += v["unavailable"] + v["refused"]; f = v["failover"] + 0; if (f > slow[m]) slow[m] = f }
	END { for (m in n) printf "%s: %s: %d results: lost=%d doubled=%d refused_calls=%d slowest_failover=%s\n", name, m, n[m], lost[m], doubled[m], refused[m], (slow[m] > 0 ? slow[m] "s" : "none") }'
echo "$NAME: runs=$RUNS passed=$pass failed=$fail${failed:+ failures:$failed}; logs in $LOGS"
[ "$fail" -eq 0 ]
