package bench

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
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
type Service struct {
	GRPCAddr, HTTPAddr, DebugAddr string

	cmd    *exec.Cmd
	exited chan struct{}
	log    *redistest.LockedBuffer
}

var (
	servingLine = regexp.MustCompile(`msg=serving grpc=(\S+) http=(\S+)`)
	debugLine   = regexp.MustCompile(`msg="serving profiles" debug=(\S+)`)
)

// startService runs the server binary on redisURL with /debug/pprof/ on,
// waits for its "serving" log line and then for /healthz to say SERVING.
func startService(bin, redisURL string, flags ...string) (*Service, error) {
	args := append([]string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-debug-addr", "127.0.0.1:0"}, flags...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "REDIS_URL="+redisURL)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	s := &Service{cmd: cmd, exited: make(chan struct{}), log: &redistest.LockedBuffer{}}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	serving := make(chan []string, 1)
	debug := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.log.Write([]byte(line + "\n"))
			if m := debugLine.FindStringSubmatch(line); m != nil {
				debug <- m[1]
			}
			if m := servingLine.FindStringSubmatch(line); m != nil {
				serving <- m[1:]
			}
		}
		_ = cmd.Wait()
		close(s.exited)
	}()
	select {
	case a := <-serving:
		s.GRPCAddr, s.HTTPAddr = a[0], a[1]
		s.DebugAddr = <-debug // logged before the serving line
	case <-s.exited:
		return nil, fmt.Errorf("the service exited before serving:\n%s", s.log.String())
	case <-time.After(20 * time.Second):
		s.Stop()
		return nil, fmt.Errorf("the service did not log its serving line within 20s:\n%s", s.log.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + s.HTTPAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("the service was not healthy within 10s:\n%s", s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PID is the service's process id.
func (s *Service) PID() int { return s.cmd.Process.Pid }

// Stop stops the service gracefully (SIGTERM), killing it after 15 s.
func (s *Service) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// Warnings returns the service's log lines at level WARN or ERROR.
func (s *Service) Warnings() []string {
	var out []string
	for _, l := range strings.Split(s.log.String(), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return out
}

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
