package redisstore

import (
	"embed"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The Lua is in lua/, one file a script, each documented at its top: its
// KEYS, its ARGV and its reply. A file that starts with a shebang is a
// script; the others are the helpers that scripts name on a "-- needs:"
// line of their header, and that load puts between the shebang and the
// script's own code. The header (the comment lines right after the
// shebang, or at the top of a helper) is documentation: load leaves it
// out, so that Redis is not sent it with every EVAL.
//
// Every script's shebang declares its flags (Redis 7.0 and later), which
// Redis reads before it runs the script. Without one, Redis checks a
// script's memory only at its first write, and lets the rest run
// unchecked: the checkout script, whose first write is a DEL (always
// allowed), grew Redis to twice its maxmemory while plain SETs were
// refused.
//
//   - "#!lua", no flags: the script grows Redis. When Redis is over its
//     maxmemory, it refuses the whole script before running it (an OOM
//     error: see storeError), so a refused call has written nothing.
//   - "#!lua flags=allow-oom": the script runs whatever the memory:
//     completing, cancelling, reading and expiring orders take away as
//     much as they add (the pending field and the index entry go; a
//     tombstone and, for an expiry, an event come), so that pending
//     orders still expire on time, and can still be paid, in a full Redis.
//   - "#!lua flags=no-writes": the script only reads, so it runs whatever
//     the memory.
//
// A shebang script may touch only keys of the slot of its KEYS on a
// cluster; every key of a partition shares its hash tag, so they do. The
// one exception, expire_many.lua, says allow-cross-slot-keys: it claims
// several partitions of one master (see claims.go).
//
// A script that writes confirms its writes in the strict durability mode
// (see durability.go and run.go) unless it is loaded with the reason why
// its writes need no confirmation: those of a script are confirmed when a
// caller is answered for them. TestScriptsDeclareTheirWrites holds every
// file of lua/ to this, and TestAcknowledgedWritesWaitForReplicas every
// write a caller is answered for.

//go:embed lua/*.lua
var luaFiles embed.FS

// script is one Lua script of lua/ and how it runs (see run.go).
type script struct {
	name string
	// lua is the script as Redis runs it; only run.go uses it, so that
	// every script runs as its declaration says.
	lua *redis.Script
	// writes is true unless the shebang says no-writes.
	writes bool
	// unconfirmed says why the writes of a script that writes need no
	// confirmation; "" for a script whose writes a caller is answered
	// for, which the strict mode confirms.
	unconfirmed string
}

// confirmed says whether the strict mode confirms the script's writes.
func (sc *script) confirmed() bool { return sc.writes && sc.unconfirmed == "" }

// confirmedWrites is load's unconfirmed for a script whose writes a caller
// is answered for, and for a script that only reads.
const confirmedWrites = ""

// scripts are the loaded scripts, by name.
var scripts = map[string]*script{}

// load reads the script lua/<name>.lua with the helpers it needs, and
// declares why its writes need no confirmation (see script.unconfirmed).
func load(name, unconfirmed string) *script {
	shebang, needs, body := luaFile(name)
	if !strings.HasPrefix(shebang, "#!lua") {
		panic("redisstore: lua/" + name + ".lua has no #!lua shebang")
	}
	var src strings.Builder
	src.WriteString(shebang)
	seen := map[string]bool{}
	var include func(names []string)
	include = func(names []string) {
		for _, n := range names {
			if seen[n] {
				continue
			}
			seen[n] = true
			sb, deps, lib := luaFile(n)
			if sb != "" {
				panic("redisstore: lua/" + name + ".lua needs " + n + ", a script, not a helper")
			}
			include(deps)
			src.WriteString(lib)
		}
	}
	include(needs)
	src.WriteString(body)
	sc := &script{name: name, lua: redis.NewScript(src.String()), writes: !slices.Contains(shebangFlags(shebang), "no-writes"), unconfirmed: unconfirmed}
	if !sc.writes && unconfirmed != "" {
		panic("redisstore: lua/" + name + ".lua writes nothing (no-writes) but is loaded as unconfirmed writes")
	}
	if scripts[name] != nil {
		panic("redisstore: lua/" + name + ".lua loaded twice")
	}
	scripts[name] = sc
	return sc
}

// luaFile splits lua/<name>.lua into its shebang line ("" for a helper),
// the helpers its header names on a "-- needs:" line, and the code after
// the header.
func luaFile(name string) (shebang string, needs []string, body string) {
	b, err := luaFiles.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic(fmt.Sprintf("redisstore: %v", err))
	}
	rest := string(b)
	if strings.HasPrefix(rest, "#!") {
		i := strings.IndexByte(rest, '\n') + 1
		shebang, rest = rest[:i], rest[i:]
	}
	for strings.HasPrefix(rest, "--") {
		line, after, _ := strings.Cut(rest, "\n")
		if n, ok := strings.CutPrefix(line, "-- needs:"); ok {
			needs = append(needs, strings.Fields(n)...)
		}
		rest = after
	}
	return shebang, needs, rest
}

// shebangFlags are the flags a shebang line declares.
func shebangFlags(shebang string) []string {
	for _, f := range strings.Fields(strings.TrimPrefix(shebang, "#!lua")) {
		if v, ok := strings.CutPrefix(f, "flags="); ok {
			return strings.Split(v, ",")
		}
	}
	return nil
}

// sweeperWrites is why the sweeper's writes need no confirmation.
const sweeperWrites = "expiries are the sweeper's, answered to no caller: an expiry a failover undoes is done again"

// The scripts, each with what its writes need. Those loaded with
// confirmedWrites and that write are what a caller is answered for: in the
// strict mode their OK waits for the replicas.
var (
	// Orders (orders.go, batch.go).
	checkoutScript   = load("checkout", confirmedWrites)
	finishScript     = load("finish", confirmedWrites)
	rescheduleScript = load("reschedule", confirmedWrites)
	getScript        = load("get", "it writes only the expiry of a due order it reads, as the sweeper would: an expiry a failover undoes is done again")
	listScript       = load("list", confirmedWrites)
	statsScript      = load("stats", confirmedWrites)

	// The sweeper (sweeper.go).
	expireDueScript  = load("expire_due", sweeperWrites)
	expireManyScript = load("expire_many", sweeperWrites)

	// The store's identity and the expiration log (epoch.go, log.go).
	identityScript = load("identity", "it records a missing identity, which the next layout records again if a failover loses it (see epoch.go)")
	clockScript    = load("clock", confirmedWrites)
	lastIDScript   = load("last_id", confirmedWrites)

	// Consumer groups (groups.go).
	createGroupScript = load("create_group", confirmedWrites)
	settleScript      = load("settle", confirmedWrites)
	redriveScript     = load("redrive", confirmedWrites)
	deliverScript     = load("deliver", "a delivery a failover undoes is delivered again, as one whose ack deadline lapsed: delivery is at least once")
	groupStateScript  = load("group_state", "it writes only the burial of lapsed last deliveries, which every read of the group does again")
	deadLettersScript = load("dead_letters", "it writes only the burial of lapsed last deliveries and the forgetting of trimmed ones, which every read does again")

	// Bulk operations (bulk.go).
	cancelOpScript    = load("cancel_op", confirmedWrites)
	bulkChangeScript  = load("bulk_change", confirmedWrites)
	bulkScanScript    = load("bulk_scan", confirmedWrites)
	bulkMatchedScript = load("bulk_matched", "an operation's progress is its worker's: a scan a failover undoes is done again, and each change is confirmed (bulk_change)")
	claimOpScript     = load("claim_op", "a lease is the worker's own: one a failover undoes is claimed again")
	endOpScript       = load("end_op", "an operation's end is its worker's: one a failover undoes leaves the operation running, and a worker ends it again")

	// The strict mode's barrier (durability.go): it is the confirmation.
	syncScript = load("sync", "it is the barrier that the confirmation of other writes waits for")
)
