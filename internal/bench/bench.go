// Package bench measures the order-expiry service as a user runs it: it
// starts its own redis-server and the built server binary on free loopback
// ports, drives them through the real gRPC and REST ports, and sets each
// figure beside a baseline measured in the same run (the naive SET+PX and
// keyspace-notification recipe, or redis-benchmark), with the goal set for
// each. The machine is small and shared by the load generator, the
// service and Redis, so the ratios within one run are what count.
package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// Stages are the measurements, in the order they run.
var Stages = []string{"lateness-a", "lateness-b", "throughput", "memory", "scale", "fanout", "cluster", "groups", "batch", "list", "bulk", "capacity"}

// Config says what to run.
type Config struct {
	// Only names the stages to run ("lateness" means both lateness stages);
	// empty runs all.
	Only []string
	// Quick uses small numbers, for a smoke test.
	Quick bool
	// Naive runs the naive-recipe baselines of the lateness stages.
	Naive bool
	// ProfileDir, when set, receives a 10 s CPU profile of the service
	// taken during each stage's load.
	ProfileDir string
	// EventsDir, when set, receives for each lateness workload a file of
	// the tracked orders' lateness, one order a line (see writeEvents).
	EventsDir string
	// GRPCConns is how many connections the 50 gRPC callers share.
	GRPCConns int
	// Markdown prints the table as Markdown too.
	Markdown bool
	// Burst, when above 0, is how many orders stage 1b makes due within
	// one second, instead of the size's.
	Burst int
	// BurstPending, when 0 or above, is how many orders pending (not due)
	// stage 1b's second part holds beside its burst, instead of the size's;
	// 0 skips that part. Below 0: the size's.
	BurstPending int
	// Out receives the machine and the table; Log the progress.
	Out, Log io.Writer
}

// sizes are the numbers of a run.
type sizes struct {
	callers            int           // concurrent callers
	lateDue, lateBg    int           // stage 1a
	heavyDue           int           // stage 1b
	burstPending       int           // stage 1b's second part: orders pending beside the burst (0: no second part)
	naiveWait, svcWait time.Duration // bounds after the last deadline
	loadFor, warmup    time.Duration // per measurement of a load
	rounds             int           // stage 2: rounds of its four contenders
	roundFor           time.Duration // stage 2: a round's measurement of each server
	slices             int           // stage 2: turns each server of a pair takes in a round
	benchN             int           // redis-benchmark -n
	memOrders          int           // stage 3
	watchers           []int         // stage 4
	fanRate            int           // expirations per second
	fanFor             time.Duration // how long they go on
	groupRate          int           // stage 7: expirations per second
	groupFor           time.Duration // how long they go on
	scalePending       int           // stage 5: orders pending throughout
	scaleRate          int           // stage 5: expirations per second
	scaleFor           time.Duration // stage 5: how long they go on
	listPending        int           // stage 10: pending orders beside the pages
	capPending         int           // capacity: orders pending throughout
	capRates           []int         // capacity: the rates stepped through, expirations a second
	capFor             time.Duration // capacity: how long each rate goes on
}

var (
	full = sizes{callers: 50, lateDue: 1000, lateBg: 100_000, heavyDue: 100_000, burstPending: 1_000_000,
		naiveWait: 60 * time.Second, svcWait: 30 * time.Second, loadFor: 10 * time.Second, rounds: 3, roundFor: 5 * time.Second, slices: 10, warmup: time.Second,
		benchN: 1_000_000, memOrders: 100_000, watchers: []int{1, 100, 1000}, fanRate: 1000, fanFor: 3 * time.Second,
		groupRate: 1000, groupFor: 20 * time.Second,
		scalePending: 1_000_000, scaleRate: 10_000, scaleFor: 60 * time.Second, listPending: 1_000_000,
		capPending: 1_000_000, capRates: []int{5000, 10_000, 20_000, 40_000}, capFor: 30 * time.Second}
	quick = sizes{callers: 50, lateDue: 200, lateBg: 5_000, heavyDue: 5_000, burstPending: 20_000,
		naiveWait: 5 * time.Second, svcWait: 10 * time.Second, loadFor: 2 * time.Second, rounds: 2, roundFor: time.Second, slices: 2, warmup: 300 * time.Millisecond,
		benchN: 100_000, memOrders: 5_000, watchers: []int{1, 10, 100}, fanRate: 1000, fanFor: time.Second,
		groupRate: 1000, groupFor: 2 * time.Second,
		scalePending: 20_000, scaleRate: 1000, scaleFor: 3 * time.Second, listPending: 100_000,
		capPending: 20_000, capRates: []int{1000, 2000, 4000, 8000}, capFor: 3 * time.Second}
)

type runner struct {
	cfg       Config
	sz        sizes
	dir       string
	serverBin string
	// baselineBin is cmd/bench/baseline, built when a stage needs it.
	baselineBin string
	t           table
}

// Run runs the selected stages and prints the table.
func Run(ctx context.Context, cfg Config) error {
	selected, err := selectStages(cfg.Only)
	if err != nil {
		return err
	}
	r := &runner{cfg: cfg, sz: full}
	if cfg.Quick {
		r.sz = quick
	}
	if cfg.Burst > 0 {
		r.sz.heavyDue = cfg.Burst
	}
	if cfg.BurstPending >= 0 {
		r.sz.burstPending = cfg.BurstPending
	}
	if r.cfg.GRPCConns < 1 {
		r.cfg.GRPCConns = 1
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		return fmt.Errorf("redis-server is needed (apt-get install redis-server): %w", err)
	}
	if _, err := exec.LookPath("redis-benchmark"); err != nil && (slices.Contains(selected, "throughput") || slices.Contains(selected, "batch")) {
		return fmt.Errorf("redis-benchmark is needed (apt-get install redis-tools): %w", err)
	}
	if r.dir, err = os.MkdirTemp("", "orderexpiry-bench"); err != nil {
		return err
	}
	defer os.RemoveAll(r.dir)
	for _, dir := range []string{cfg.ProfileDir, cfg.EventsDir} {
		if dir == "" {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}

	fmt.Fprint(cfg.Out, machine(selected, cfg))
	// goBuild builds a command of the module into the run's directory.
	goBuild := func(what, name, pkg string) (string, error) {
		bin := filepath.Join(r.dir, name)
		r.logf("building the %s: go build -o %s ./%s", what, bin, pkg)
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/orderexpiry/orderexpiry/"+pkg)
		build.Stdout, build.Stderr = cfg.Log, cfg.Log
		if err := build.Run(); err != nil {
			return "", fmt.Errorf("building the %s: %w", what, err)
		}
		return bin, nil
	}
	if r.serverBin, err = goBuild("service", "orderexpiry", "cmd/server"); err != nil {
		return err
	}
	if slices.Contains(selected, "throughput") {
		if r.baselineBin, err = goBuild("baselines", "baseline", "cmd/bench/baseline"); err != nil {
			return err
		}
	}

	began := time.Now()
	var failed []string
	for _, s := range selected {
		stageStart := time.Now()
		var err error
		switch s {
		case "lateness-a":
			err = r.lateness(ctx, "a", r.sz.lateBg, r.sz.lateDue, 10*time.Millisecond)
		case "lateness-b":
			err = r.burst(ctx)
		case "throughput":
			err = r.throughput(ctx)
		case "memory":
			err = r.memory(ctx)
		case "scale":
			err = r.scale(ctx)
		case "fanout":
			err = r.fanout(ctx)
		case "cluster":
			err = r.cluster(ctx)
		case "groups":
			err = r.groups(ctx)
		case "batch":
			err = r.batch(ctx)
		case "list":
			err = r.list(ctx)
		case "bulk":
			err = r.bulk(ctx)
		case "capacity":
			err = r.capacity(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.logf("stage %s FAILED: %v", s, err)
			r.t.note("stage %s failed: %v", s, err)
			failed = append(failed, s)
		}
		r.logf("stage %s took %s", s, time.Since(stageStart).Round(time.Second))
	}
	fmt.Fprintf(cfg.Out, "\nall stages took %s\n\n", time.Since(began).Round(time.Second))
	r.t.print(cfg.Out, false)
	if cfg.Markdown {
		fmt.Fprintln(cfg.Out)
		r.t.print(cfg.Out, true)
	}
	if len(failed) > 0 {
		return fmt.Errorf("stages failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

func selectStages(only []string) ([]string, error) {
	if len(only) == 0 {
		return Stages, nil
	}
	want := map[string]bool{}
	for _, o := range only {
		o = strings.TrimSpace(o)
		switch {
		case o == "":
		case o == "lateness":
			want["lateness-a"], want["lateness-b"] = true, true
		case slices.Contains(Stages, o):
			want[o] = true
		default:
			return nil, fmt.Errorf("unknown stage %q: want lateness, %s", o, strings.Join(Stages, ", "))
		}
	}
	var out []string
	for _, s := range Stages {
		if want[s] {
			out = append(out, s)
		}
	}
	return out, nil
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// machine describes the machine, the tools and the command.
func machine(stages []string, cfg Config) string {
	var b strings.Builder
	cpu := "unknown"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	out := func(name string, args ...string) string {
		o, err := exec.Command(name, args...).Output()
		if err != nil {
			return "unavailable (" + err.Error() + ")"
		}
		return strings.TrimSpace(strings.SplitN(string(o), "\n", 2)[0])
	}
	fmt.Fprintf(&b, "machine:  %s CPUs (nproc), %s, %s %s\n", out("nproc"), cpu, runtime.GOOS, out("uname", "-r"))
	fmt.Fprintf(&b, "go:       %s\n", out("go", "version"))
	fmt.Fprintf(&b, "redis:    %s\n", out("redis-server", "--version"))
	fmt.Fprintf(&b, "          %s\n", out("redis-benchmark", "--version"))
	rev := out("git", "rev-parse", "--short", "HEAD")
	if changed := uncommitted(); len(changed) > 0 {
		rev += " with uncommitted changes to " + strings.Join(changed, ", ")
	}
	fmt.Fprintf(&b, "service:  commit %s\n", rev)
	fmt.Fprintf(&b, "load:     %s (1-minute load average before the run; other processes on this machine disturb the figures)\n", loadAvg())
	fmt.Fprintf(&b, "run:      %s, stages %s, %d gRPC connection(s) for the callers\n", time.Now().UTC().Format(time.RFC3339), strings.Join(stages, ","), max(cfg.GRPCConns, 1))
	if cfg.Quick {
		b.WriteString("          QUICK mode: small numbers, a smoke test; not the full workloads\n")
	}
	return b.String()
}

// uncommitted lists the files that differ from the commit and go into the
// server binary: non-test Go files (the benchmark's own excepted), go.mod and
// go.sum.
func uncommitted() []string {
	o, err := exec.Command("git", "status", "--porcelain", "--untracked-files=all", "--", ".").Output()
	if err != nil {
		return []string{"(git status failed)"}
	}
	var out []string
	for _, l := range strings.Split(string(o), "\n") {
		if len(l) < 4 {
			continue
		}
		path := l[3:]
		code := strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") &&
			!strings.HasPrefix(path, "internal/bench/") && !strings.HasPrefix(path, "cmd/bench/")
		if code || path == "go.mod" || path == "go.sum" {
			out = append(out, path)
		}
	}
	return out
}

// env is a fresh redis-server with a service on it and gRPC clients.
type env struct {
	redis   *Redis
	svc     *Service
	conns   []*grpc.ClientConn
	clients []pb.OrderServiceClient
	warn    func()
}

// startEnv starts a fresh redis-server and a service on it.
func (r *runner) startEnv() (*env, error) {
	return r.startEnvWith(func(redisURL string) (*Service, error) { return startService(r.serverBin, redisURL) })
}

// startBaselineEnv starts a fresh redis-server and the baseline servers
// (cmd/bench/baseline) on it, in the service's place.
func (r *runner) startBaselineEnv() (*env, error) {
	return r.startEnvWith(func(redisURL string) (*Service, error) { return startBaseline(r.baselineBin, redisURL) })
}

// startEnvWith starts a fresh redis-server and, with start, a server on it.
func (r *runner) startEnvWith(start func(redisURL string) (*Service, error)) (*env, error) {
	rd, err := startRedis(r.dir)
	if err != nil {
		return nil, err
	}
	svc, err := start(rd.URL())
	if err != nil {
		rd.Stop()
		return nil, err
	}
	conns, clients, err := dial(svc.GRPCAddr, r.cfg.GRPCConns)
	if err != nil {
		svc.Stop()
		rd.Stop()
		return nil, err
	}
	return &env{redis: rd, svc: svc, conns: conns, clients: clients, warn: func() {
		if w := svc.Warnings(); len(w) > 0 {
			r.logf("  the service logged %d warnings; the first:\n%s", len(w), indent(strings.Join(w[:min(len(w), 5)], "\n"), "    "))
			r.t.note("the service logged %d warnings, the first: %s", len(w), w[0])
		}
	}}, nil
}

// exited returns an error with the end of the service's log when the
// service has ended, and nil while it runs.
func (e *env) exited() error {
	if e.svc.Alive() {
		return nil
	}
	lines := strings.Split(strings.TrimRight(e.svc.Logs(), "\n"), "\n")
	return fmt.Errorf("the service exited during the stage (%v); the end of its log:\n%s",
		e.svc.ExitCode(), indent(strings.Join(lines[max(len(lines)-40, 0):], "\n"), "    "))
}

func (e *env) stop() {
	closeAll(e.conns)
	e.svc.Stop()
	e.warn()
	e.redis.Stop()
}

// cpuSnap is the CPU time used so far by the service, Redis and this load
// generator.
type cpuSnap struct {
	at                     time.Time
	svc, redis, gen, total time.Duration
}

func (e *env) cpu() cpuSnap {
	return cpuSnap{at: time.Now(), svc: cpuTime(e.svc.PID()), redis: cpuTime(e.redis.PID()), gen: selfCPU(), total: machineBusy()}
}

// cpuUse is the CPU each process used over a window: the service (or the
// baseline server standing in for it), Redis, this load generator, a child
// counted apart (extra: redis-benchmark) and the rest of the machine (other
// processes; this machine may be shared).
type cpuUse struct {
	wall                           time.Duration
	svc, redis, gen, extra, others time.Duration
}

// String says how much CPU each process used over the window.
func (c cpuUse) String() string {
	return fmt.Sprintf("CPU over %s: service %.2fs, redis %.2fs, load generator %.2fs, other processes %.2fs",
		c.wall.Round(10*time.Millisecond), c.svc.Seconds(), c.redis.Seconds(), c.gen.Seconds(), c.others.Seconds())
}

// perCall splits the CPU of n calls: "service + Redis + load generator"
// microseconds per call.
func (c cpuUse) perCall(n int) string {
	if n <= 0 {
		return "-"
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(n) / 1e3 }
	return fmt.Sprintf("%.0f + %.0f + %.0f µs", us(c.svc), us(c.redis), us(c.gen))
}

// total is the CPU of the service, Redis and the load generator together.
func (c cpuUse) total() time.Duration { return c.svc + c.redis + c.gen }

// cpuUsed measures the CPU each process used since s. extra is CPU used by a
// child counted apart (redis-benchmark).
func (e *env) cpuUsed(s cpuSnap, extra time.Duration) cpuUse {
	n := e.cpu()
	c := cpuUse{wall: n.at.Sub(s.at), svc: n.svc - s.svc, redis: n.redis - s.redis, gen: n.gen - s.gen, extra: extra}
	c.others = max(n.total-s.total-c.svc-c.redis-c.gen-extra, 0)
	return c
}

// cpuSince says how much CPU each process used since s, and how much the
// rest of the machine used. extra is CPU used by a child counted apart
// (redis-benchmark).
func (e *env) cpuSince(s cpuSnap, extra time.Duration) string { return e.cpuUsed(s, extra).String() }

// callAll makes n calls with `callers` concurrent callers and stops at the
// first error.
func callAll(ctx context.Context, callers, n int, call func(ctx context.Context, i int) error) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	for range callers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := call(ctx, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), firstErr
}

// profiling is a CPU profile being taken.
type profiling struct{ done chan struct{} }

// profile takes a 10 s CPU profile of the service from `at`, into
// <ProfileDir>/<name>.pprof, when profiling was asked for.
func (r *runner) profile(svc *Service, name string, at time.Time) *profiling {
	if r.cfg.ProfileDir == "" || svc.DebugAddr == "" {
		return nil
	}
	p := &profiling{done: make(chan struct{})}
	path := filepath.Join(r.cfg.ProfileDir, name+".pprof")
	go func() {
		defer close(p.done)
		time.Sleep(time.Until(at))
		resp, err := http.Get("http://" + svc.DebugAddr + "/debug/pprof/profile?seconds=10")
		if err != nil {
			r.logf("  profile %s: %v", name, err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err == nil {
			_, err = io.Copy(f, resp.Body)
			f.Close()
		}
		if err != nil {
			r.logf("  profile %s: %v", name, err)
			return
		}
		r.logf("  CPU profile: %s (go tool pprof -top %s)", path, path)
	}()
	return p
}

func (p *profiling) wait() {
	if p != nil {
		<-p.done
	}
}
