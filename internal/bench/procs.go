package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	"github.com/orderexpiry/orderexpiry/internal/serverproc"
)

// Redis is a redis-server of the benchmarks' own on a free loopback port,
// with Redis's defaults except that it persists nothing.
type Redis struct{ *redistest.Server }

// startRedis starts redis-server in dir and waits until it answers PING.
func startRedis(dir string, args ...string) (*Redis, error) {
	s, err := redistest.Launch(dir, nil, args...)
	if err != nil {
		return nil, err
	}
	return &Redis{s}, nil
}

// Client returns a client with a pool large enough for the load generators.
func (r *Redis) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.Addr, PoolSize: 64, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
}

// Stop kills the server; it keeps no data, so nothing is lost.
func (r *Redis) Stop() { r.Kill() }

// Service is the orderexpiry server process, started as a user starts it,
// on free loopback ports.
type Service struct{ *serverproc.Process }

// startService runs the server binary on redisURL with /debug/pprof/ on,
// waits for its serving line and then for /healthz to say SERVING.
func startService(bin, redisURL string, flags ...string) (*Service, error) {
	return launch(bin, redisURL, append([]string{"-debug-addr", "127.0.0.1:0"}, flags...))
}

// startBaseline runs the baseline servers (cmd/bench/baseline) on redisURL
// as the service is run; they have no debug port.
func startBaseline(bin, redisURL string) (*Service, error) { return launch(bin, redisURL, nil) }

// launch runs a server binary on redisURL, on free loopback ports, and
// waits for its serving line and then for /healthz to answer 200.
func launch(bin, redisURL string, flags []string) (*Service, error) {
	p, err := serverproc.Start(serverproc.Options{Binary: bin, Env: []string{"REDIS_URL=" + redisURL}, Flags: flags})
	if err != nil {
		return nil, err
	}
	s := &Service{p}
	if err := p.WaitHealthy(10*time.Second, serverproc.Health{}); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Stop stops the service gracefully (SIGTERM), killing it after 15 s.
func (s *Service) Stop() { s.Process.Stop(syscall.SIGTERM) }

// cpuTime is the CPU time (user + system) a process has used so far, from
// /proc/<pid>/stat, whose clock ticks are 1/100 s on Linux.
func cpuTime(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; the fields after it do not.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// selfCPU is the CPU time this process (the load generator) has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineBusy is the CPU time all processes of the machine have used so far
// (every field of /proc/stat's cpu line but idle and iowait).
func machineBusy() time.Duration {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// loadAvg is the first field of /proc/loadavg.
func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(raw))[0]
}
