package redisstore

import (
	"fmt"
	"strconv"
	"strings"
)

// partitionsKey records the number of partitions, written at the store's
// first start and never changed: an order's partition is a hash of its id
// modulo that number.
const partitionsKey = "oe:partitions"

// epochKey records the store's identity, "<random id> <since ms>": written
// beside partitionsKey when the store is new, and again when a replica finds
// it gone, which means that Redis was emptied (see epoch.go). Since is when
// the history of the expiration log that the store holds began, by Redis's
// clock: 0 for a store recorded before epochs existed. Its hash tag, the
// name of partitionsKey, puts it in that key's slot of a Redis Cluster, so
// that one script reads and writes both.
const epochKey = "oe:epoch{oe:partitions}"

// keys names every Redis key of one partition. All of them share the hash
// tag "{<partition>}", so that in Redis Cluster a partition lives on one
// node and each script, which touches one partition only, stays in one slot.
//
//	oe:{p}:alarm          string, the earliest pending deadline (unix ms),
//	                      living alarmGrace past it: every sweep and every
//	                      new earliest deadline set it again, so that only
//	                      when no sweeper swept the partition in time does
//	                      Redis expire it, and its expired event wakes
//	                      them; deleted when nothing is pending
//	oe:{p}:order:<id>     no longer written: a ttl key per pending order,
//	                      living alarmGrace past its deadline, from before
//	                      the alarm; those left expire by themselves, and
//	                      their events still wake the sweepers
//	oe:{p}:deadlines      sorted set, id -> deadline (unix ms): the index of
//	                      pending orders that lets no expiry be forgotten
//	oe:{p}:pending        hash, id -> "<created ms> <metadata JSON>"; kept
//	                      apart from the index, whose members carry no value
//	oe:{p}:closed:<id>    string "<status> <created> <deadline> <closed>
//	                      <metadata JSON>" with the retention as ttl: the
//	                      tombstone of a completed or cancelled order (and
//	                      of an expired one written before the hash below)
//	oe:{p}:expired        hash, id -> the same record, the tombstones of
//	                      expired orders: the sweeper writes a batch's in
//	                      one command (a key with a ttl each was about a
//	                      quarter of a claim's cost in Redis), and each goes
//	                      when its event is trimmed from the log (see
//	                      trimLog in lua/prelude.lua), so that it lives as
//	                      long as its event: the retention after it
//	                      expired, or longer while a consumer group needs
//	                      the event
//	oe:{p}:retained       sorted set, id -> deadline (unix ms) of closed
//	                      orders, for listing them in deadline order beside
//	                      the pending ones; an entry goes a retention after
//	                      its deadline (the sweep trims it), or when the id
//	                      is checked out again, so that it may outlive its
//	                      tombstone (a completed order's by the time it had
//	                      left) and is then skipped
//	oe:{p}:events         stream of expirations, trimmed to the retention
//	oe:{p}:wake           pub/sub channel: a checkout whose deadline comes
//	                      before every other pending one wakes all sweepers
//	oe:{p}:counts         hash, status -> orders closed so, for "completed"
//	                      and "cancelled" (expirations are the events
//	                      stream's entries-added); never trimmed
//	oe:{p}:sync           string "1", written by every strict write as the
//	                      barrier its WAIT confirms (see syncScript)
//	oe:{p}:trimmed        string "1" living a second after a claim that
//	                      expired orders trimmed the partition's log and
//	                      retained index: the claims meanwhile skip the
//	                      trims (lua/expire.lua)
type keys struct {
	prefix    string
	deadlines string
	pending   string
	events    string
	wake      string
	counts    string
	expired   string
}

// newKeys names the keys of a partition; lua/prelude.lua's usePartition
// names them again from the prefix, for a script over several partitions.
func newKeys(partition int) keys {
	p := fmt.Sprintf("oe:{%d}:", partition)
	return keys{
		prefix:    p,
		deadlines: p + "deadlines",
		pending:   p + "pending",
		events:    p + "events",
		wake:      p + "wake",
		counts:    p + "counts",
		expired:   p + "expired",
	}
}

// alarmPartition returns the partition of an alarm key, or of a ttl key of
// an order written before the alarm, and false for any other key.
func alarmPartition(key string) (int, bool) {
	rest, ok := strings.CutPrefix(key, "oe:{")
	if !ok {
		return 0, false
	}
	num, rest, ok := strings.Cut(rest, "}:")
	if !ok || (rest != "alarm" && !strings.HasPrefix(rest, "order:")) {
		return 0, false
	}
	p, err := strconv.Atoi(num)
	return p, err == nil && p >= 0
}

// closed names the tombstone of a closed order (see the layout above); the
// scripts build the same name from the prefix.
func (k keys) closed(id string) string { return k.prefix + "closed:" + id }

// scriptKeys are the KEYS every script takes, in the order lua/prelude.lua names them.
func (k keys) scriptKeys() []string { return []string{k.deadlines, k.pending, k.events, k.wake} }
