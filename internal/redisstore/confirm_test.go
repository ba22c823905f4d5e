package redisstore_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestAcknowledgedWritesWaitForReplicas holds the strict mode's rule: a
// write a caller is answered for runs with its confirmation, WAIT after it
// on the same connection and in the same round trip. It watches every
// command the store sends, and fails when
//
//   - a call answered to its caller (checkout, complete, cancel,
//     reschedule, group create and delete, ack, nack, release, redrive,
//     starting and cancelling a bulk operation) runs a script that writes,
//     whatever that script is declared to be, or a command that Redis
//     flags as a write (COMMAND INFO), without a WAIT after it; or
//   - any script declared confirmed (scripts.go) runs without one; or
//   - a script declared confirmed was not seen at all: every one is
//     exercised here.
func TestAcknowledgedWritesWaitForReplicas(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	rdb := srv.Client(t)
	rec := &recorder{}
	rdb.AddHook(rec)
	s := redisstore.New(rdb, redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Durability: redisstore.DurabilityStrict, Partitions: 2})
	ctx := t.Context()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	acked := func(what string, call func() error) {
		t.Helper()
		rec.acked.Store(true)
		err := call()
		rec.acked.Store(false)
		must(what, err)
	}
	g := order.Group{ID: "g", AckDeadline: time.Minute, MaxDeliveries: 1}
	acked("CreateGroup", func() error { _, _, err := s.CreateGroup(ctx, g, nil, 10); return err })
	for i := range 6 {
		acked("Checkout", func() error { _, _, err := s.Checkout(ctx, fmt.Sprint("o", i), time.Hour, nil); return err })
	}
	acked("BatchCheckout", func() error {
		for _, r := range s.BatchCheckout(ctx, []order.CheckoutItem{{ID: "b1", TTL: time.Hour}, {ID: "b2", TTL: time.Hour}}) {
			if r.Err != nil {
				return r.Err
			}
		}
		return nil
	})
	acked("Complete", func() error { _, err := s.Complete(ctx, "o0"); return err })
	acked("Cancel", func() error { _, err := s.Cancel(ctx, "o1"); return err })
	acked("Reschedule", func() error {
		_, err := s.Reschedule(ctx, "o2", order.Reschedule{TTL: 2 * time.Hour, MaxTTL: 24 * time.Hour})
		return err
	})
	must("MakeDue", s.MakeDue(ctx))
	must("ExpireDue", s.ExpireDue(ctx))
	ds, err := s.Deliver(ctx, g.ID, "c", 10)
	must("Deliver", err)
	if len(ds) < 3 {
		t.Fatalf("Deliver: %d deliveries, want 3 or more", len(ds))
	}
	acked("Ack", func() error { _, err := s.Ack(ctx, g.ID, []order.AckID{ds[0].AckID}); return err })
	acked("Release", func() error { _, err := s.Release(ctx, g.ID, []order.AckID{ds[1].AckID}); return err })
	acked("Nack", func() error { _, err := s.Nack(ctx, g.ID, []order.AckID{ds[2].AckID}, 0, "failed"); return err })
	acked("Redrive", func() error { _, err := s.Redrive(ctx, g.ID, nil); return err })

	// A bulk operation's changes: confirmed, although its worker runs them.
	for i := range 2 {
		acked("Checkout", func() error { _, _, err := s.Checkout(ctx, fmt.Sprint("bulk", i), time.Hour, nil); return err })
	}
	var op order.Operation
	acked("StartOperation", func() (err error) {
		op, err = s.StartOperation(ctx, order.Operation{Filter: `order_id = "bulk0"`, Change: order.BulkChange{Cancel: true}})
		return err
	})
	_, err = s.WorkOperationSplit(ctx, op.ID, func() {})
	must("WorkOperationSplit", err)
	acked("StartOperation", func() (err error) {
		op, err = s.StartOperation(ctx, order.Operation{Filter: `order_id = "bulk1"`, Change: order.BulkChange{Cancel: true}})
		return err
	})
	acked("CancelOperation", func() error { _, err := s.CancelOperation(ctx, op.ID); return err })
	acked("DeleteGroup", func() error { return s.DeleteGroup(ctx, g.ID) })

	for _, v := range rec.violations() {
		t.Error(v)
	}
	unwaited := rec.unwaitedCommands()
	if len(unwaited) == 0 {
		t.Fatal("no command ran without a WAIT after it for a call answered to its caller: the recorder saw nothing (reads at least run so)")
	}
	for _, name := range writeCommands(t, srv.Client(t), unwaited) {
		t.Errorf("command %s writes, and ran for a call answered to its caller, without a WAIT after it", name)
	}
	seen := rec.confirmedSeen()
	for _, name := range redisstore.ConfirmedScripts() {
		if !seen[name] {
			t.Errorf("script %s is declared confirmed but this test never ran it: exercise it here", name)
		}
	}
}

// recorder is a go-redis hook that checks, for each command or pipeline
// sent, that every script in it that must be confirmed has a WAIT after it.
type recorder struct {
	// acked is set while a call answered to its caller runs.
	acked atomic.Bool
	mu    sync.Mutex
	bad   []string
	seen  map[string]bool
	// unwaited are the commands other than scripts sent for a call
	// answered to its caller without a WAIT after them, "xgroup|create"
	// for a subcommand.
	unwaited map[string]bool
}

func (r *recorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *recorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.check([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (r *recorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.check(cmds)
		return next(ctx, cmds)
	}
}

func (r *recorder) check(cmds []redis.Cmder) {
	acked := r.acked.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]bool{}
		r.unwaited = map[string]bool{}
	}
	for i, c := range cmds {
		args := c.Args()
		if len(args) < 1 {
			continue
		}
		var sha string
		switch strings.ToLower(fmt.Sprint(args[0])) {
		case "wait", "role", "asking":
			continue // the confirmation's own, and a redirection's
		case "evalsha", "evalsha_ro":
			sha = fmt.Sprint(args[1])
		case "eval", "eval_ro":
			sum := sha1.Sum([]byte(fmt.Sprint(args[1])))
			sha = hex.EncodeToString(sum[:])
		}
		if sha == "" {
			if acked && !waited(cmds[i+1:]) {
				r.unwaited[commandName(args)] = true
			}
			continue
		}
		name, writes, confirmed, ok := redisstore.ScriptOf(sha)
		if !ok {
			// The tests' own Lua (MakeDue) is not the store's.
			if acked {
				r.bad = append(r.bad, fmt.Sprintf("a script that is none of lua/ ran for a call answered to its caller: %.60q", fmt.Sprint(args[1])))
			}
			continue
		}
		if name == "sync" {
			continue // the confirmation's own barrier
		}
		waited := waited(cmds[i+1:])
		if confirmed && waited {
			r.seen[name] = true
		}
		switch {
		case confirmed && !waited:
			r.bad = append(r.bad, fmt.Sprintf("script %s, declared confirmed, ran without a WAIT after it", name))
		case acked && writes && !waited:
			r.bad = append(r.bad, fmt.Sprintf("script %s writes, and ran for a call answered to its caller, without a WAIT after it", name))
		}
	}
}

func (r *recorder) violations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.bad)
}

func (r *recorder) confirmedSeen() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen
}

// waited says whether a WAIT is among cmds.
func waited(cmds []redis.Cmder) bool {
	return slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return strings.EqualFold(c.Name(), "wait") })
}

// commandName names a command as COMMAND INFO does: "hset", or
// "xgroup|create" for a subcommand.
func commandName(args []any) string {
	name := strings.ToLower(fmt.Sprint(args[0]))
	switch name {
	case "xgroup", "xinfo", "config", "client", "object", "script":
		if len(args) > 1 {
			name += "|" + strings.ToLower(fmt.Sprint(args[1]))
		}
	}
	return name
}

func (r *recorder) unwaitedCommands() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for name := range r.unwaited {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// writeCommands returns those of names that Redis flags as writes.
func writeCommands(t *testing.T, admin *redis.Client, names []string) []string {
	args := []any{"COMMAND", "INFO"}
	for _, n := range names {
		args = append(args, n)
	}
	infos, err := admin.Do(t.Context(), args...).Slice()
	if err != nil {
		t.Fatalf("COMMAND INFO %v: %v", names, err)
	}
	var out []string
	for i, info := range infos {
		fields, _ := info.([]any)
		if len(fields) < 3 {
			continue // one this Redis does not know (CLIENT SETINFO before 7.2): it refused it
		}
		flags, _ := fields[2].([]any)
		for _, f := range flags {
			if fmt.Sprint(f) == "write" {
				out = append(out, names[i])
			}
		}
	}
	return out
}
