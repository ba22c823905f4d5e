package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	// Named service: this package has a server type of its own.
	service "github.com/orderexpiry/orderexpiry/internal/server"
	"github.com/orderexpiry/orderexpiry/internal/serverproc"
)

// inProcessStopTimeout bounds the wait for Run to return once its context
// has ended, as serverproc bounds the wait for a process after its signal.
const inProcessStopTimeout = 15 * time.Second

// serverEnv is what a test's server finds in its environment beyond this
// process's own: REDIS_URL is cleared, so that a server starts on the
// memory store unless env names a store, whatever the environment of the
// tests says; env comes last and wins.
func serverEnv(env map[string]string) map[string]string {
	m := map[string]string{"REDIS_URL": ""}
	maps.Copy(m, env)
	return m
}

// inProcess is a server running in this process, built as cmd/server builds
// it (ParseFlags, Listen, NewLogger, New and Run of internal/server) from the flags and the
// environment the binary would get, so that its defaults and checks are the
// binary's; its log goes to a buffer.
type inProcess struct {
	// GRPCAddr, HTTPAddr and DebugAddr are the addresses of its listeners;
	// DebugAddr is empty without -debug-addr.
	GRPCAddr, HTTPAddr, DebugAddr string

	cancel context.CancelFunc
	exited chan struct{} // closed once Run has returned
	logs   *redistest.LockedBuffer
}

// startInProcess starts the server with env (see serverEnv) and flags
// (after free loopback ports, see serverproc.Args) in a goroutine. It
// returns once the listeners are open: the server accepts connections from
// then on, before it is healthy.
func startInProcess(env map[string]string, flags []string) (*inProcess, error) {
	senv := serverEnv(env)
	getenv := func(k string) string {
		if v, ok := senv[k]; ok {
			return v
		}
		return os.Getenv(k)
	}
	logs := &redistest.LockedBuffer{}
	f, err := service.ParseFlags(serverproc.Args(flags), getenv, logs)
	if err != nil {
		return nil, fmt.Errorf("the server refused its flags: %w\n%s", err, logs)
	}
	lis, err := service.Listen(f)
	if err != nil {
		return nil, err
	}
	srv, err := service.New(f.Config, service.NewLogger(f, logs))
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("the server did not start: %w\n%s", err, logs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{
		GRPCAddr: lis.GRPC.Addr().String(),
		HTTPAddr: lis.HTTP.Addr().String(),
		cancel:   cancel,
		exited:   make(chan struct{}),
		logs:     logs,
	}
	if lis.Debug != nil {
		p.DebugAddr = lis.Debug.Addr().String()
	}
	go func() {
		defer close(p.exited)
		if err := srv.Run(ctx, lis); err != nil {
			// Where the binary would print it before exiting 1.
			fmt.Fprintln(logs, "orderexpiry:", err)
		}
	}()
	return p, nil
}

// Stop ends the server as SIGTERM ends the binary, by ending Run's context,
// and waits for Run to return; it returns false if Run had not returned
// within 15 s. Stopping a server that has stopped does nothing.
func (p *inProcess) Stop() bool {
	p.cancel()
	select {
	case <-p.exited:
		return true
	case <-time.After(inProcessStopTimeout):
		return false
	}
}

// Alive reports whether Run has not returned yet.
func (p *inProcess) Alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Logs returns what the server logged so far.
func (p *inProcess) Logs() string { return p.logs.String() }
