package server

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the flag table of docs/configuration.md")

const (
	configDoc  = "../../docs/configuration.md"
	tableBegin = "<!-- flag table: generated from the sub-configs of internal/server (Config.register); run `make flagdoc` after changing a flag -->\n"
	tableEnd   = "<!-- end of the flag table -->\n"
)

// TestConfigurationDoc: the flag table of docs/configuration.md is the one
// FlagTable makes from the flag definitions, so that it cannot go stale.
// `make flagdoc` (go test ./internal/server -run TestConfigurationDoc
// -update) rewrites it.
func TestConfigurationDoc(t *testing.T) {
	b, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	before, rest, ok1 := strings.Cut(doc, tableBegin)
	table, after, ok2 := strings.Cut(rest, tableEnd)
	if !ok1 || !ok2 {
		t.Fatalf("%s has no flag table between the lines\n%s...\n%s", configDoc, tableBegin, tableEnd)
	}
	want := FlagTable()
	if table == want {
		return
	}
	if *update {
		if err := os.WriteFile(configDoc, []byte(before+tableBegin+want+tableEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("the flag table of %s is stale: run `make flagdoc` and commit it. It should be:\n%s", configDoc, want)
}

// TestFlagTable: every flag and every variable read without a flag is in
// the table, with its default.
func TestFlagTable(t *testing.T) {
	table := FlagTable()
	for _, row := range []string{
		"| `-grpc-addr` | `GRPC_ADDR` | `:9090` |",
		"| `-max-ttl` | `MAX_TTL` | `168h` |",
		"| `-push-allow-http` | `PUSH_ALLOW_HTTP` | `false` |",
		"|  | `AUTH_TOKENS` |  |",
		"|  | `REDIS_SENTINEL_PASSWORD` |  |",
	} {
		if !strings.Contains(table, row) {
			t.Errorf("no row %s in\n%s", row, table)
		}
	}
	// Every flag -h lists has its row.
	var usage strings.Builder
	if _, err := ParseFlags([]string{"-h"}, func(string) string { return "" }, &usage); err != flag.ErrHelp {
		t.Fatalf("-h: %v", err)
	}
	n := 0
	for _, line := range strings.Split(usage.String(), "\n") {
		if name, ok := strings.CutPrefix(line, "  -"); ok {
			name, _, _ = strings.Cut(name, " ")
			n++
			if !strings.Contains(table, "| `-"+name+"` |") {
				t.Errorf("-%s has no row", name)
			}
		}
	}
	// Durations are written one way, as the service's messages write
	// them: "15m", never time.Duration's "15m0s".
	for _, want := range []string{"(default 15m)", "(default 168h)", "(default 1m)"} {
		if !strings.Contains(usage.String(), want) {
			t.Errorf("-h does not say %s", want)
		}
	}
	if strings.Contains(usage.String(), "m0s)") || strings.Contains(table, "m0s`") {
		t.Errorf("-h or the table writes a duration with its zero seconds:\n%s\n%s", usage.String(), table)
	}
	if !strings.Contains(table, "| `-idle-timeout` | `IDLE_TIMEOUT` | `1m` |") {
		t.Errorf("the table's -idle-timeout default is not written as -h writes it (1m)")
	}
	if n < 40 || strings.Count(table, "| `-") != n {
		t.Errorf("-h lists %d flags, the table %d", n, strings.Count(table, "| `-"))
	}
}
