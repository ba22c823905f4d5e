#!/usr/bin/env bash
# torture-failover runs the failover tests RUNS times each under two CPU
# burners, and sums what they report: orders lost and expired twice, calls
# refused, failover and rejoin times, lateness after the failover. The
# burners are cmd/contend's (as make torture-faults uses), which this script
# starts and kills when it ends (they also stop by themselves after
# MAX_TIME, or when the script goes). Logs stay in a temporary directory,
# named at the end. Run it from the repository's root (make
# torture-failover does).
set -u
RUNS=${RUNS:-20}
GO=${GO:-go}
MAX_TIME=${MAX_TIME:-3h}
TESTS=${TESTS:-TestSentinelFailover TestClusterFailover TestStrictFailoverKeepsConfirmed TestPartitionedMaster}
out=$(mktemp -d /tmp/torture-failover.XXXXXX)
$GO build -o "$out/contend" ./cmd/contend || exit 1
"$out/contend" -cpu 2 -disk 0 -for "$MAX_TIME" &
burner=$!
trap 'kill $burner 2>/dev/null' EXIT INT TERM
echo "torture-failover: RUNS=$RUNS under 2 CPU burners; logs in $out"
failed=0
for run in $(seq 1 "$RUNS"); do
	for t in $TESTS; do
		log="$out/$t-$run.log"
		if $GO test -count=1 -timeout 15m -v -run "^$t\$" ./internal/e2e >"$log" 2>&1; then
			status=PASS
		else
			status=FAIL
			failed=$((failed + 1))
		fi
		results=$(grep -o 'RESULT .*' "$log" || true)
		echo "$status $t run $run"
		[ -n "$results" ] && echo "$results" | sed 's/^/    /'
		[ "$status" = FAIL ] && grep -E '^\s+\S+_test\.go:[0-9]+: ' "$log" | grep -v RESULT | head -5 | sed 's/^/    /'
	done
done
# Totals over every RESULT line, by durability mode (the Sentinel and
# Cluster tests run strict): lost, doubled, refused calls, and the slowest
# failover.
grep -ho 'RESULT .*' "$out"/*.log | awk '
	{ delete v; for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
	{ m = ("mode" in v) ? v["mode"] : "strict"; n[m]++; lost[m] += v["lost"]; doubled[m] += v["doubled"]
	  refused[m] += v["unavailable"] + v["refused"]; f = v["failover"] + 0; if (f > slow[m]) slow[m] = f }
	END { for (m in n) printf "torture-failover: %s: %d results: lost=%d doubled=%d refused_calls=%d slowest_failover=%ss\n", m, n[m], lost[m], doubled[m], refused[m], slow[m] }'
echo "torture-failover: $failed failed runs; logs in $out"
[ "$failed" -eq 0 ]
