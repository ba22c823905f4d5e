package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// ctl runs the built orderexpiryctl with env (and nothing of the test's
// own ORDEREXPIRY_* variables).
type ctl struct {
	bin string
	env []string
}

// buildCtl builds orderexpiryctl as `make build` does.
func buildCtl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "orderexpiryctl")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/orderexpiry/orderexpiry/cmd/orderexpiryctl").CombinedOutput()
	if err != nil {
		t.Fatalf("building orderexpiryctl: %v\n%s", err, out)
	}
	return bin
}

func (c ctl) cmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ORDEREXPIRY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, c.env...)
	return cmd
}

// run runs it to its end and returns what it printed and its exit status.
func (c ctl) run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := c.cmd(ctx, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("orderexpiryctl %v: %v", args, err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// ok runs it and fails the test unless it exits 0.
func (c ctl) ok(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := c.run(t, args...)
	if code != 0 {
		t.Fatalf("orderexpiryctl %v: exit status %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
	}
	return out
}

// json runs it with -o json and decodes what it printed.
func (c ctl) json(t *testing.T, args ...string) map[string]any {
	t.Helper()
	out := c.ok(t, append(args, "-o", "json")...)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("orderexpiryctl %v -o json printed %q: %v", args, out, err)
	}
	return m
}

// fails runs it and checks its exit status and that stderr says each of
// mentions.
func (c ctl) fails(t *testing.T, wantCode int, mentions []string, args ...string) {
	t.Helper()
	out, errOut, code := c.run(t, args...)
	if code != wantCode {
		t.Fatalf("orderexpiryctl %v: exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", args, code, wantCode, out, errOut)
	}
	for _, m := range mentions {
		if !strings.Contains(errOut, m) {
			t.Errorf("orderexpiryctl %v: stderr %q does not say %q", args, errOut, m)
		}
	}
}

// TestCLI builds orderexpiryctl and runs it against a server that wants a
// token, as an operator and a script would: each command's table and JSON,
// the address and token from the environment or from flags, the exit
// statuses, a watch that stops at Ctrl-C and resumes after the cursor it
// printed, and the consumer groups with a dead letter redriven.
func TestCLI(t *testing.T) {
	t.Parallel()
	bin := buildCtl(t)
	s := startServerWith(t, serverOptions{Token: "cli-token"}, map[string]string{"AUTH_TOKENS": "cli-token"}, pushFlags...)
	c := ctl{bin: bin, env: []string{"ORDEREXPIRY_ADDR=" + s.GRPCAddr, "ORDEREXPIRY_TOKEN=cli-token", "ORDEREXPIRY_INSECURE=true"}}

	t.Run("orders", func(t *testing.T) {
		out := c.ok(t, "orders", "checkout", "cli-1", "-ttl", "1h", "-meta", "customer=c-7")
		if !strings.Contains(out, "ORDER") || !strings.Contains(out, "cli-1") || !strings.Contains(out, "PENDING") ||
			!strings.Contains(out, "1h") || !strings.Contains(out, "customer=c-7") {
			t.Errorf("checkout printed:\n%s", out)
		}
		if _, errOut, code := c.run(t, "orders", "checkout", "cli-1", "-ttl", "1h", "-meta", "customer=c-7"); code != 0 || !strings.Contains(errOut, "pending already") {
			t.Errorf("a repeated checkout: exit %d, stderr %q; want 0, saying the order was pending already", code, errOut)
		}
		c.fails(t, 4, []string{"ALREADY_EXISTS", "customer"}, "orders", "checkout", "cli-1")
		o := c.json(t, "orders", "get", "cli-1")
		if o["status"] != "ORDER_STATUS_PENDING" || field(o, "metadata", "customer") != "c-7" {
			t.Errorf("get -o json: %v", o)
		}
		o = c.json(t, "orders", "reschedule", "cli-1", "-ttl", "2h")
		if o["reschedules"] != float64(1) {
			t.Errorf("reschedule -o json: %v", o)
		}
		c.fails(t, 4, []string{"ABORTED"}, "orders", "reschedule", "cli-1", "-ttl", "1m", "-expect", "2000-01-01T00:00:00Z")
		if out := c.ok(t, "orders", "complete", "cli-1"); !strings.Contains(out, "COMPLETED") {
			t.Errorf("complete printed:\n%s", out)
		}
		c.fails(t, 4, []string{"FAILED_PRECONDITION", "completed"}, "orders", "cancel", "cli-1")
		c.ok(t, "orders", "checkout", "cli-2")
		if out := c.ok(t, "orders", "cancel", "--", "cli-2"); !strings.Contains(out, "CANCELLED") {
			t.Errorf("cancel printed:\n%s", out)
		}
		ids := func(list map[string]any) []string {
			var out []string
			for _, o := range list["orders"].([]any) {
				out = append(out, o.(map[string]any)["orderId"].(string))
			}
			return out
		}
		if got := ids(c.json(t, "orders", "list", "-filter", `order_id:"cli-*"`)); fmt.Sprint(got) != "[cli-2 cli-1]" {
			t.Errorf("orders list by deadline: %v, want [cli-2 cli-1]", got)
		}
		if got := ids(c.json(t, "orders", "list", "-filter", `order_id:"cli-*" AND status = COMPLETED`)); fmt.Sprint(got) != "[cli-1]" {
			t.Errorf("orders list of the completed: %v, want [cli-1]", got)
		}
		out, errOut, code := c.run(t, "orders", "list", "-filter", `order_id:"cli-*"`, "-order-by", "deadline desc", "-limit", "1")
		next, more := strings.CutPrefix(strings.TrimSpace(errOut), "more: -page-token ")
		if code != 0 || !strings.Contains(out, "cli-1") || strings.Contains(out, "cli-2") || !more || next == "" || strings.Contains(next, " ") {
			t.Fatalf("orders list -limit 1: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		if out := c.ok(t, "orders", "list", "-filter", `order_id:"cli-*"`, "-order-by", "deadline desc", "-page-token", next); !strings.Contains(out, "cli-2") || strings.Contains(out, "cli-1") {
			t.Errorf("orders list -page-token: %s", out)
		}
		c.fails(t, 2, []string{"INVALID_ARGUMENT", "bogus"}, "orders", "list", "-filter", "bogus = 1")
		c.fails(t, 3, []string{"NOT_FOUND"}, "orders", "get", "none-such")
		c.fails(t, 2, []string{"INVALID_ARGUMENT", "order_id"}, "orders", "checkout", "a:b")
		c.fails(t, 2, []string{"orders get: want ORDER_ID", "orderexpiryctl orders get --help"}, "orders", "get")
		c.fails(t, 2, []string{"give -ttl or -deadline"}, "orders", "reschedule", "cli-1")
		c.fails(t, 2, []string{`unknown command "frob"`}, "orders", "frob")
		c.fails(t, 2, []string{"-o \"yaml\""}, "orders", "get", "cli-1", "-o", "yaml")
	})

	t.Run("settings", func(t *testing.T) {
		// From flags, with no environment; the flags go before or after
		// the command.
		bare := ctl{bin: bin}
		bare.ok(t, "-addr", s.GRPCAddr, "-insecure", "-token", "cli-token", "stats")
		bare.ok(t, "stats", "-addr", s.GRPCAddr, "-insecure", "-token", "cli-token")
		bare.fails(t, 6, []string{"UNAUTHENTICATED", "-token", "ORDEREXPIRY_TOKEN"}, "stats", "-addr", s.GRPCAddr, "-insecure")
		bare.fails(t, 6, []string{"refused the token"}, "stats", "-addr", s.GRPCAddr, "-insecure", "-token", "wrong")
		// The default is TLS; the server (as make run) serves plaintext.
		bare.fails(t, 5, []string{"does not speak TLS", "-insecure"}, "stats", "-addr", s.GRPCAddr, "-token", "cli-token")
		bare.fails(t, 5, []string{"UNAVAILABLE"}, "stats", "-addr", "127.0.0.1:1", "-insecure")
		if _, errOut, code := (ctl{bin: bin, env: []string{"ORDEREXPIRY_INSECURE=maybe"}}).run(t, "stats"); code != 2 || !strings.Contains(errOut, "ORDEREXPIRY_INSECURE") {
			t.Errorf("ORDEREXPIRY_INSECURE=maybe: exit %d, stderr %q", code, errOut)
		}
	})

	t.Run("help", func(t *testing.T) {
		for _, args := range [][]string{{"--help"}, {"help"}, {"orders", "--help"}, {"orders", "checkout", "-h"}, {"watch", "--help"}, {"groups", "redrive", "--help"}} {
			out, _, code := c.run(t, args...)
			if code != 0 || !strings.Contains(out, "Usage: orderexpiryctl") || !strings.Contains(out, "orderexpiryctl ") {
				t.Errorf("%v: exit %d\n%s", args, code, out)
			}
		}
		if out := c.ok(t, "--help"); !strings.Contains(out, "Exit status:") || !strings.Contains(out, "Examples:") {
			t.Errorf("--help does not list the exit statuses and examples:\n%s", out)
		}
		if out := c.ok(t, "orders", "checkout", "--help"); !strings.Contains(out, "-ttl") || !strings.Contains(out, "Examples:") {
			t.Errorf("orders checkout --help:\n%s", out)
		}
		c.fails(t, 2, []string{"give a command"})
	})

	t.Run("watch", func(t *testing.T) {
		// A live watch, stopped by Ctrl-C, says where to go on from.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := c.cmd(ctx, "watch")
		stderr := &redistest.LockedBuffer{}
		cmd.Stderr = stderr
		pipe, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(pipe)
		if !lines.Scan() || !strings.HasPrefix(lines.Text(), "EXPIRED-AT") {
			t.Fatalf("watch's first line: %q; stderr %s", lines.Text(), stderr)
		}
		// The watch is open once the service counts it.
		for deadline := time.Now().Add(10 * time.Second); ; {
			if st := c.json(t, "stats"); field(st, "replica", "watchers") == float64(1) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the watch did not open within 10s; stderr %s", stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
		c.ok(t, "orders", "checkout", "w-1", "-ttl", "100ms", "-meta", "k=v")
		if !lines.Scan() || !strings.Contains(lines.Text(), "w-1") || !strings.Contains(lines.Text(), "k=v") {
			t.Fatalf("watch's line for w-1: %q; stderr %s", lines.Text(), stderr)
		}
		fields := strings.Fields(lines.Text())
		cursor := fields[3]
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		for lines.Scan() {
			t.Errorf("after w-1, watch printed %q", lines.Text())
		}
		if err := cmd.Wait(); err != nil || !strings.Contains(stderr.String(), "go on with: -after "+cursor) {
			t.Fatalf("watch after Ctrl-C: %v; stderr %q, want exit 0 and the cursor %s", err, stderr, cursor)
		}

		// Resumed after that cursor, it prints what came since, not w-1.
		c.ok(t, "orders", "checkout", "w-2", "-ttl", "100ms")
		out := c.ok(t, "watch", "-after", cursor, "-limit", "1", "-o", "json")
		var ev map[string]any
		if err := json.Unmarshal([]byte(out), &ev); err != nil || ev["orderId"] != "w-2" || strings.Count(out, "\n") != 1 {
			t.Fatalf("watch -after %s -limit 1 -o json printed %q (%v), want the one event of w-2", cursor, out, err)
		}
		c.fails(t, 2, []string{"INVALID_ARGUMENT", "after_cursor"}, "watch", "-after", "nonsense")
	})

	t.Run("groups", func(t *testing.T) {
		if out := c.ok(t, "groups", "create", "g-1", "-ack-deadline", "1m", "-max-deliveries", "1"); !strings.Contains(out, "g-1") || !strings.Contains(out, "1m") {
			t.Errorf("groups create printed:\n%s", out)
		}
		c.fails(t, 4, []string{"ALREADY_EXISTS", "ack_deadline 1m, not 2m"}, "groups", "create", "g-1", "-ack-deadline", "2m", "-max-deliveries", "1")
		if g := c.json(t, "groups", "get", "g-1"); g["ackDeadline"] != "60s" || g["maxDeliveries"] != float64(1) {
			t.Errorf("groups get -o json: %v", g)
		}
		if out := c.ok(t, "groups", "list"); !strings.Contains(out, "GROUP") || !strings.Contains(out, "g-1") {
			t.Errorf("groups list printed:\n%s", out)
		}
		// An expiration, delivered once and handed back, is a dead letter
		// of a group of one delivery.
		c.ok(t, "orders", "checkout", "dl-1", "-ttl", "100ms")
		code, body := s.restCall(t, "POST", "/v1/groups/g-1:pull", `{"maxEvents":1,"wait":"10s"}`)
		got, _ := body["receivedExpirations"].([]any)
		if code != 200 || len(got) != 1 {
			t.Fatalf("pull: %d %v", code, body)
		}
		ackID := got[0].(map[string]any)["ackId"].(string)
		if code, body := s.restCall(t, "POST", "/v1/groups/g-1:nack", `{"ackIds":["`+ackID+`"],"reason":"out of stock"}`); code != 200 {
			t.Fatalf("nack: %d %v", code, body)
		}
		out := c.ok(t, "groups", "dead-letters", "g-1")
		if !strings.Contains(out, "DEAD-LETTER") || !strings.Contains(out, "dl-1") || !strings.Contains(out, "REASON") || !strings.Contains(out, "out of stock") {
			t.Fatalf("dead-letters printed:\n%s", out)
		}
		dl := c.json(t, "groups", "dead-letters", "g-1")
		letters, _ := dl["deadLetters"].([]any)
		if len(letters) != 1 {
			t.Fatalf("dead-letters -o json: %v", dl)
		}
		c.fails(t, 2, []string{"dead letter ids or -all"}, "groups", "redrive", "g-1")
		if out := c.ok(t, "groups", "redrive", "g-1", letters[0].(map[string]any)["deadLetterId"].(string)); !strings.Contains(out, "redrove 1") {
			t.Errorf("redrive printed:\n%s", out)
		}
		if dl := c.json(t, "groups", "dead-letters", "g-1"); len(dl["deadLetters"].([]any)) != 0 {
			t.Errorf("dead letters after the redrive: %v", dl)
		}
		if r := c.json(t, "groups", "redrive", "g-1", "-all"); r["redriven"] != "0" {
			t.Errorf("redrive -all with none: %v", r)
		}
		// A push group, its secret from a file.
		secret := filepath.Join(t.TempDir(), "whsec.txt")
		if err := os.WriteFile(secret, []byte("whsec_"+strings.Repeat("QUJD", 8)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		g := c.json(t, "groups", "create", "hooks", "-push-url", "http://127.0.0.1:9/hook", "-push-secret-file", secret, "-push-timeout", "2500ms")
		if field(g, "pushConfig", "timeout") != "2.500s" || !strings.HasPrefix(fmt.Sprint(field(g, "pushConfig", "secretFingerprint")), "sha256:") {
			t.Errorf("groups create with push -o json: %v", g)
		}
		c.ok(t, "groups", "delete", "hooks")
		c.fails(t, 2, []string{"-push-secret-file", "no such file"}, "groups", "create", "hooks", "-push-url", "http://127.0.0.1:9/hook", "-push-secret-file", secret+".none")
		c.ok(t, "groups", "delete", "g-1")
		c.fails(t, 3, []string{"NOT_FOUND"}, "groups", "get", "g-1")
		c.fails(t, 3, []string{"NOT_FOUND"}, "groups", "delete", "g-1")
	})

	t.Run("stats", func(t *testing.T) {
		out := c.ok(t, "stats")
		for _, col := range []string{"PENDING", "EXPIRED", "PARTITION", "WATCHERS", "P99"} {
			if !strings.Contains(out, col) {
				t.Errorf("stats printed no %s:\n%s", col, out)
			}
		}
		if st := c.json(t, "stats"); field(st, "orders", "completed") == nil {
			t.Errorf("stats -o json: %v", st)
		}
	})
}
