// Package serverproc runs the built server binary as a child process, as a
// user runs it: it starts it with an environment and flags on free loopback
// ports, reads the serving line for its addresses, waits for health, stops
// it with a signal and keeps its logs. Its functions return errors, so that
// both the end-to-end tests (internal/e2e, which wrap them for a
// testing.T) and the benchmarks (internal/bench) use them.
package serverproc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// servingTimeout bounds the wait for the serving line.
	servingTimeout = 20 * time.Second
	// stopTimeout bounds the wait for the process to end after a signal.
	stopTimeout = 15 * time.Second
	// runTimeout bounds Run.
	runTimeout = 10 * time.Second
)

// Options say how to start the server.
type Options struct {
	// Binary is the path of the built server (go build ./cmd/server).
	Binary string
	// Env is added to this process's environment, as "KEY=value" entries;
	// a later entry for a key wins over an earlier one and over this
	// process's own.
	Env []string
	// Flags come after "-grpc-addr 127.0.0.1:0 -http-addr 127.0.0.1:0",
	// which they may override: the last of a repeated flag wins.
	Flags []string
}

// Args are the server's arguments for flags: free loopback ports for gRPC
// and HTTP, then flags, which may override them.
func Args(flags []string) []string {
	return append([]string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0"}, flags...)
}

// command is the server's command line for opts.
func (opts Options) command() *exec.Cmd {
	cmd := exec.Command(opts.Binary, Args(opts.Flags)...)
	cmd.Env = append(os.Environ(), opts.Env...)
	setParentDeathSignal(cmd)
	return cmd
}

// Process is a server process started by Start.
type Process struct {
	// GRPCAddr and HTTPAddr are the "host:port" the serving line names.
	GRPCAddr, HTTPAddr string
	// DebugAddr serves /debug/pprof/ when the server was started with
	// -debug-addr; empty otherwise.
	DebugAddr string

	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has ended

	mu    sync.Mutex
	lines []string // what it wrote to stderr, line by line
}

// Start starts the server and waits until it logs its serving line, in the
// text or the JSON log format, which says its addresses. If the process
// exits first or says nothing within 20 s, Start kills it and returns an
// error with what it wrote.
func Start(opts Options) (*Process, error) {
	cmd := opts.command()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the server %s: %w", opts.Binary, err)
	}
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	serving := make(chan addrs, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var debug string
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
			a, ok := parseLine(line)
			switch {
			case !ok:
			case a.debug != "":
				debug = a.debug // logged before the serving line
			default:
				a.debug = debug
				serving <- a
			}
		}
		_ = cmd.Wait()
		close(p.exited)
	}()
	select {
	case a := <-serving:
		p.GRPCAddr, p.HTTPAddr, p.DebugAddr = a.grpc, a.http, a.debug
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("the server exited (%v) before serving; its log:\n%s", cmd.ProcessState, p.Logs())
	case <-time.After(servingTimeout):
		p.Stop(syscall.SIGKILL)
		return nil, fmt.Errorf("the server did not log its serving line within %s; its log:\n%s", servingTimeout, p.Logs())
	}
}

// addrs are what a log line says the server serves on.
type addrs struct{ grpc, http, debug string }

var (
	servingLine = regexp.MustCompile(`msg=serving grpc=(\S+) http=(\S+)`)
	debugLine   = regexp.MustCompile(`msg="serving profiles" debug=(\S+)`)
)

// parseLine reads the serving line (the gRPC and HTTP addresses) or the
// debug server's line (its address), in the text or the JSON format; ok is
// false for any other line.
func parseLine(line string) (a addrs, ok bool) {
	if strings.HasPrefix(line, "{") {
		var l struct{ Msg, GRPC, HTTP, Debug string }
		if json.Unmarshal([]byte(line), &l) != nil {
			return addrs{}, false
		}
		switch {
		case l.Msg == "serving" && l.GRPC != "" && l.HTTP != "":
			return addrs{grpc: l.GRPC, http: l.HTTP}, true
		case l.Msg == "serving profiles" && l.Debug != "":
			return addrs{debug: l.Debug}, true
		}
		return addrs{}, false
	}
	if m := servingLine.FindStringSubmatch(line); m != nil {
		return addrs{grpc: m[1], http: m[2]}, true
	}
	if m := debugLine.FindStringSubmatch(line); m != nil {
		return addrs{debug: m[1]}, true
	}
	return addrs{}, false
}

// Health says how WaitHealthy asks the server's /healthz.
type Health struct {
	// Client sends the requests: nil for http.DefaultClient; for a server
	// that serves HTTPS, one that trusts its certificate.
	Client *http.Client
	// HTTPS asks https:// rather than http://.
	HTTPS bool
	// Header is sent with each request: Authorization for a bearer token.
	Header http.Header
}

// WaitHealthy asks /healthz every 20 ms until it answers 200 (SERVING),
// and fails when that takes longer than timeout or the process ends.
func (p *Process) WaitHealthy(timeout time.Duration, h Health) error {
	if err := h.Wait(p.HTTPAddr, timeout, p.exited); err != nil {
		if !p.Alive() {
			err = fmt.Errorf("%w (%v)", err, p.cmd.ProcessState)
		}
		return fmt.Errorf("%w; its log:\n%s", err, p.Logs())
	}
	return nil
}

// Wait asks the /healthz of the server whose HTTP port is httpAddr every
// 20 ms until it answers 200 (SERVING), and fails when that takes longer
// than timeout or when exited is closed first: the server has ended.
func (h Health) Wait(httpAddr string, timeout time.Duration, exited <-chan struct{}) error {
	client := h.Client
	if client == nil {
		client = http.DefaultClient
	}
	url := "http://" + httpAddr + "/healthz"
	if h.HTTPS {
		url = "https://" + httpAddr + "/healthz"
	}
	deadline := time.Now().Add(timeout)
	var last string
	for {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			return err
		}
		for k, vs := range h.Header {
			req.Header[k] = vs
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server was not healthy within %s (last answer: %s)", timeout, last)
		}
		select {
		case <-exited:
			return errors.New("the server exited before it was healthy")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// PID is the process's id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Status reads one field of the process's /proc/<pid>/status given in kB
// (VmRSS, VmHWM, ...), in kB.
func (p *Process) Status(field string) (int, error) {
	path := fmt.Sprintf("/proc/%d/status", p.PID())
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				return 0, fmt.Errorf("%s: %q is not a number of kB", path, line)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s has no %s", path, field)
}

// Exited is closed once the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Alive reports whether the process is still running.
func (p *Process) Alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Stop sends sig and waits for the process to end; it returns false if it
// had not ended within 15 s, and then kills it. Stopping a process that has
// ended does nothing and returns true.
func (p *Process) Stop(sig syscall.Signal) bool {
	if !p.Alive() {
		return true
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return true
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return false
	}
}

// ExitCode is the process's exit code once it has ended (-1 while it runs,
// or when a signal ended it).
func (p *Process) ExitCode() int {
	if p.Alive() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Logs returns what the server wrote to stderr so far.
func (p *Process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.lines) == 0 {
		return ""
	}
	return strings.Join(p.lines, "\n") + "\n"
}

// Warnings returns the lines the server logged at level WARN or ERROR, in
// the text or the JSON format.
func (p *Process) Warnings() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, l := range p.lines {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") ||
			strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
			out = append(out, l)
		}
	}
	return out
}

// ErrNoExit is returned by Run for a server that was still running after
// 10 s.
var ErrNoExit = errors.New("the server did not exit within 10s")

// Run runs the server to its end, for a server expected to refuse to start
// (a bad flag, a malformed variable), and returns what it wrote to stdout and
// stderr, and the error of its exit (an *exec.ExitError for a non-zero exit
// code). A server still running after 10 s is killed, and Run returns
// ErrNoExit.
func Run(opts Options) (string, error) {
	cmd := opts.command()
	var out bytes.Buffer // written by exec's copying goroutines until Wait returns
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start the server %s: %w", opts.Binary, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(runTimeout):
		_ = cmd.Process.Kill()
		<-done
		return out.String(), ErrNoExit
	}
}
