package client_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/client"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// example is a running example program: what it printed, line by line, by
// the first word of the line.
type example struct {
	cmd    *exec.Cmd
	stderr *redistest.LockedBuffer
	// lines gets the second word of each stdout line (the order id; with
	// a colon after it for "stopped"), by its first word ("expired",
	// "handled", "failed", "stopped").
	lines map[string]*seen
	done  chan struct{}
}

// buildExamples builds the example programs into a temporary directory and
// returns it.
func buildExamples(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"watcher", "worker"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name),
			"github.com/orderexpiry/orderexpiry/client/examples/"+name).CombinedOutput()
		if err != nil {
			t.Fatalf("building the %s example: %v\n%s", name, err, out)
		}
	}
	return dir
}

// runExample starts the program with args and stops it with SIGTERM when
// the test ends, checking that it then exits 0.
func runExample(t *testing.T, bin string, args ...string) *example {
	t.Helper()
	e := &example{cmd: exec.Command(bin, args...), stderr: &redistest.LockedBuffer{}, done: make(chan struct{}),
		lines: map[string]*seen{"expired": {}, "handled": {}, "failed": {}, "stopped": {}}}
	e.cmd.Stderr = e.stderr
	out, err := e.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(e.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || e.lines[f[0]] == nil {
				t.Errorf("%s printed %q", filepath.Base(bin), sc.Text())
				continue
			}
			e.lines[f[0]].add(f[1])
		}
	}()
	t.Cleanup(func() {
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		<-e.done
		if err := e.cmd.Wait(); err != nil {
			t.Errorf("%s %v: %v after SIGTERM; stderr:\n%s", filepath.Base(bin), args, err, e.stderr)
		}
	})
	return e
}

// TestExamples builds the watcher and the worker examples and runs them
// against a server with a token: the watcher prints each expiration once,
// and two workers in one group handle each once between them, although one
// of them fails the first delivery of each order it gets.
func TestExamples(t *testing.T) {
	t.Parallel()
	bin := buildExamples(t)
	s := startServer(t, map[string]string{"AUTH_TOKENS": "ex-token"})
	auth := []string{"-addr", s.GRPCAddr, "-insecure", "-token", "ex-token"}

	watcher := runExample(t, filepath.Join(bin, "watcher"), append(auth, "-after", "0-0")...)
	w1 := runExample(t, filepath.Join(bin, "worker"), append(auth, "-group", "fleet", "-consumer", "w1")...)
	w2 := runExample(t, filepath.Join(bin, "worker"), append(auth, "-group", "fleet", "-consumer", "w2", "-fail-first")...)

	c := dial(t, s.GRPCAddr, client.Options{Insecure: true, Token: "ex-token"})
	// The group starts from its creation: the orders come after it.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := c.GetConsumerGroup(context.Background(), &pb.GetConsumerGroupRequest{GroupId: "fleet"}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the workers did not create their group within 15 s; stderr:\n%s\n%s", w1.stderr, w2.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	want := ids("ex-", 1, 10)
	checkout(t, c, 300*time.Millisecond, want...)

	watched := watcher.lines["expired"].waitFor(t, len(want))
	handled := func() []string { return append(w1.lines["handled"].get(), w2.lines["handled"].get()...) }
	deadline = time.Now().Add(15 * time.Second)
	for len(handled()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// Nothing more comes.
	time.Sleep(500 * time.Millisecond)
	once(t, watcher.lines["expired"].get(), want)
	once(t, handled(), want)
	// Each order w2 failed was handed back, and handled once (above).
	t.Logf("watcher: %v\nw1 handled %v\nw2 failed %v, handled %v", watched, w1.lines["handled"].get(), w2.lines["failed"].get(), w2.lines["handled"].get())
}

// TestExamplesSayWhatToSet runs the examples with the settings a new user
// gets wrong first: the default TLS against a plaintext server (as `make
// run` starts), and no token against a server that wants one. Each exits 1
// at once, saying which flag to set.
func TestExamplesSayWhatToSet(t *testing.T) {
	t.Parallel()
	bin := buildExamples(t)
	s := startServer(t, map[string]string{"AUTH_TOKENS": "ex-token"})
	for _, tc := range []struct {
		name    string
		args    []string
		mention []string
	}{
		{"TLS against plaintext", []string{"-addr", s.GRPCAddr, "-token", "ex-token"}, []string{"does not speak TLS", "-insecure"}},
		{"no token", []string{"-addr", s.GRPCAddr, "-insecure"}, []string{"missing bearer token", "-token", "ORDEREXPIRY_TOKEN"}},
	} {
		for _, name := range []string{"watcher", "worker"} {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				args := tc.args
				if name == "worker" {
					args = append(args, "-group", "g")
				}
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
				cmd.Env = append(os.Environ(), "ORDEREXPIRY_TOKEN=")
				out, err := cmd.CombinedOutput()
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 1 {
					t.Fatalf("%s %v: %v, want exit status 1; output:\n%s", name, args, err, out)
				}
				for _, m := range tc.mention {
					if !strings.Contains(string(out), m) {
						t.Errorf("%s %v printed %q, which does not say %q", name, args, out, m)
					}
				}
			})
		}
	}
}

// TestWorkerGroupLost: Redis is emptied under a running worker, its group
// with it; the worker creates the group again and handles the expirations
// that come after.
func TestWorkerGroupLost(t *testing.T) {
	if testing.Short() {
		t.Skip("a Redis emptied under a worker: skipped with -short")
	}
	t.Parallel()
	bin := buildExamples(t)
	r := redistest.Start(t)
	s := startServer(t, map[string]string{"REDIS_URL": r.URL()})
	w := runExample(t, filepath.Join(bin, "worker"), "-addr", s.GRPCAddr, "-insecure", "-group", "kept")
	c := dial(t, s.GRPCAddr, client.Options{Insecure: true})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := c.GetConsumerGroup(context.Background(), &pb.GetConsumerGroupRequest{GroupId: "kept"}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not create its group within 15 s; stderr:\n%s", w.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	checkout(t, c, 200*time.Millisecond, "before")
	w.lines["handled"].waitFor(t, 1)

	if err := r.Client(t).FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	// Orders checked out after the flush, one every half second, until the
	// worker handles one: the first may expire before the worker finds its
	// group gone.
	deadline = time.Now().Add(20 * time.Second)
	for i := 0; len(w.lines["handled"].get()) < 2; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the worker handled nothing after the flush within 20 s; stderr:\n%s", w.stderr)
		}
		if _, err := c.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: fmt.Sprint("after-", i), Ttl: durationpb.New(200 * time.Millisecond)}); err != nil {
			t.Logf("checkout after the flush: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !strings.Contains(w.stderr.String(), "creating it again") {
		t.Errorf("the worker did not say it created its group again; stderr:\n%s", w.stderr)
	}
	if err := w.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the worker exited: %v; stderr:\n%s", err, w.stderr)
	}
}

// TestWorkerStopsAtAckDeadline: a worker whose work outlasts the group's ack
// deadline stops each handler at the deadline, saying so, and the group
// delivers the expiration again; two handlers run at once.
func TestWorkerStopsAtAckDeadline(t *testing.T) {
	t.Parallel()
	bin := buildExamples(t)
	s := startServer(t, nil)
	c := dial(t, s.GRPCAddr, client.Options{Insecure: true})
	if _, err := c.CreateConsumerGroup(context.Background(), &pb.CreateConsumerGroupRequest{GroupId: "slow", AckDeadline: durationpb.New(300 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	w := runExample(t, filepath.Join(bin, "worker"), "-addr", s.GRPCAddr, "-insecure", "-group", "slow", "-concurrency", "2", "-work", "10s")
	checkout(t, c, 50*time.Millisecond, "slow-1", "slow-2")
	// Each stopped at least twice: at its first delivery's deadline and
	// at its second's.
	stopped := w.lines["stopped"].waitFor(t, 4)
	for _, id := range []string{"slow-1:", "slow-2:"} {
		if n := len(slices.DeleteFunc(slices.Clone(stopped), func(s string) bool { return s != id })); n < 2 {
			t.Errorf("the worker stopped %s %d times, want 2 or more: %v", id, n, stopped)
		}
	}
	if got := w.lines["handled"].get(); len(got) != 0 {
		t.Errorf("the worker handled %v, whose work outlasts the ack deadline", got)
	}
}
