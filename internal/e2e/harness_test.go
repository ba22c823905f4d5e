package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/orderexpiry/orderexpiry/internal/gen/orderexpiry/v1"
)

// binary is the server built once for all tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "orderexpiry-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "orderexpiry")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/orderexpiry/orderexpiry/cmd/server")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the server:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is one running server process.
type server struct {
	t        *testing.T
	cmd      *exec.Cmd
	GRPCAddr string
	HTTPAddr string
	// DebugAddr serves /debug/pprof/ when the server was started with
	// -debug-addr.
	DebugAddr string
	Client    pb.OrderServiceClient
	Conn      *grpc.ClientConn

	mu     sync.Mutex
	logs   bytes.Buffer
	exited chan struct{}
}

var (
	servingLine = regexp.MustCompile(`msg=serving grpc=(\S+) http=(\S+)`)
	debugLine   = regexp.MustCompile(`msg="serving profiles" debug=(\S+)`)
)

// startServer starts the server on free ports with the given environment
// (REDIS_URL and the like) and extra flags, and stops it when the test ends.
func startServer(t *testing.T, env map[string]string, flags ...string) *server {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0"}, flags...)...)
	cmd.Env = append(os.Environ(), "REDIS_URL=")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.logs.WriteString(line + "\n")
			s.mu.Unlock()
			if m := debugLine.FindStringSubmatch(line); m != nil {
				s.mu.Lock()
				s.DebugAddr = m[1]
				s.mu.Unlock()
			}
			if m := servingLine.FindStringSubmatch(line); m != nil {
				addrs <- m[1:]
			}
		}
		_ = cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.Stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("server log:\n%s", s.Logs())
		}
	})
	select {
	case a := <-addrs:
		s.GRPCAddr, s.HTTPAddr = a[0], a[1]
		s.mu.Lock() // the debug line comes before the serving line
		s.mu.Unlock()
	case <-s.exited:
		t.Fatalf("server exited before serving:\n%s", s.Logs())
	case <-time.After(20 * time.Second):
		t.Fatalf("server did not start within 20s:\n%s", s.Logs())
	}
	conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s.Conn = conn
	s.Client = pb.NewOrderServiceClient(conn)
	s.waitHealthy()
	return s
}

// waitHealthy waits until /healthz says SERVING.
func (s *server) waitHealthy() {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + s.HTTPAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("server not healthy within 10s:\n%s", s.Logs())
}

// Stop sends sig and waits for the process to end; it returns false if it
// had not ended within 15 s (then it is killed).
func (s *server) Stop(sig syscall.Signal) bool {
	select {
	case <-s.exited:
		return true
	default:
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
		return true
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return false
	}
}

// ExitCode is the process's exit code once it has ended.
func (s *server) ExitCode() int { return s.cmd.ProcessState.ExitCode() }

// Logs returns what the server wrote to stderr so far.
func (s *server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// restCall makes a REST call and returns the status and decoded JSON body.
func (s *server) restCall(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+s.HTTPAddr+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %q", method, path, raw)
	}
	return resp.StatusCode, out
}

// watcher collects the events of one gRPC watch.
type watcher struct {
	cancel context.CancelFunc
	events chan *pb.ExpirationEvent
	done   chan error
}

// watch opens a gRPC watch after the cursor ("" for live) and waits until
// the server has accepted it.
func (s *server) watch(t *testing.T, after string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := s.Client.WatchExpirations(ctx, &pb.WatchExpirationsRequest{AfterCursor: after})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	w := &watcher{cancel: cancel, events: make(chan *pb.ExpirationEvent, 100000), done: make(chan error, 1)}
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				w.done <- err
				return
			}
			w.events <- ev
		}
	}()
	return w
}

// next waits for the watcher's next event.
func (w *watcher) next(t *testing.T, timeout time.Duration) *pb.ExpirationEvent {
	t.Helper()
	select {
	case ev := <-w.events:
		return ev
	case err := <-w.done:
		t.Fatalf("watch ended: %v", err)
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
	}
	return nil
}

// collect gathers n events, failing after timeout.
func (w *watcher) collect(t *testing.T, n int, timeout time.Duration) []*pb.ExpirationEvent {
	t.Helper()
	out := make([]*pb.ExpirationEvent, 0, n)
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case ev := <-w.events:
			out = append(out, ev)
		case err := <-w.done:
			t.Fatalf("watch ended after %d of %d events: %v", len(out), n, err)
		case <-deadline:
			t.Fatalf("only %d of %d events within %s", len(out), n, timeout)
		}
	}
	return out
}

// quiet asserts that no further event arrives for d.
func (w *watcher) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev := <-w.events:
		t.Fatalf("unexpected event %v", ev)
	case <-time.After(d):
	}
}
