package server

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
)

// Flags are everything the server command can be told, by flag or by
// environment variable; a flag wins over its variable. Besides the server's
// Config they hold where to listen and how to log, which the caller of New
// acts on: Listen and NewLogger.
type Flags struct {
	Config
	Listen ListenConfig
	Log    LogConfig
}

// ListenConfig holds the listen addresses of the two ports and, when
// DebugAddr is not empty, that of /debug/pprof/.
type ListenConfig struct {
	GRPCAddr, HTTPAddr, DebugAddr string
}

func (c *ListenConfig) register(o *options) {
	o.String(&c.GRPCAddr, "grpc-addr", "GRPC_ADDR", ":9090", "gRPC listen address (reflection and grpc.health.v1 included)")
	o.String(&c.HTTPAddr, "http-addr", "HTTP_ADDR", ":8080", "listen address of REST, /healthz, /livez, /metrics, /openapi.json and the dashboard (/ui/)")
	o.String(&c.DebugAddr, "debug-addr", "DEBUG_ADDR", "", "listen address for /debug/pprof/ (profiles, goroutines, heap); empty: off. Keep it private")
}

// LogConfig says how to log: Level is the lowest level logged; JSON asks
// for JSON lines rather than text.
type LogConfig struct {
	Level slog.Level
	JSON  bool
}

func (c *LogConfig) register(o *options) {
	o.Text("log-level", "LOG_LEVEL", "info", "debug (one line per RPC), info, warn or error")
	o.Text("log-format", "LOG_FORMAT", "text", "text or json")
}

func (c *LogConfig) parse(o *options) error {
	level := o.text("log-level")
	if err := c.Level.UnmarshalText([]byte(level)); err != nil {
		return optionErrorf("log-level", "log level %q: want debug, info, warn or error", level)
	}
	switch format := o.text("log-format"); format {
	case "text":
	case "json":
		c.JSON = true
	default:
		return optionErrorf("log-format", "log format %q: want text or json", format)
	}
	return nil
}

// ParseFlags reads the command line args (without the program's name) and
// the environment through getenv, and checks what they say. Usage and flag
// errors are written to stderr; -h returns flag.ErrHelp. An error about one
// setting names its flag, or its variable when that is what was set.
func ParseFlags(args []string, getenv func(string) string, stderr io.Writer) (Flags, error) {
	return parseFlags(args, getenv, stderr, nil)
}

// parseFlags is ParseFlags; when defs is not nil, it appends every flag to
// it as it is defined.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer, defs *[]flagDef) (Flags, error) {
	var f Flags
	fs := flag.NewFlagSet("orderexpiry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := newOptions(getenv, fs, defs)
	f.Listen.register(o)
	f.Config.register(o)
	f.Log.register(o)
	if err := o.parse(args); err != nil {
		return f, err
	}
	if err := f.Config.parse(o); err != nil {
		return f, o.name(err)
	}
	if err := f.Log.parse(o); err != nil {
		return f, o.name(err)
	}
	return f, nil
}

// NewLogger returns the logger f asks for, writing to w.
func NewLogger(f Flags, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: f.Log.Level}
	if f.Log.JSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Listen opens the listeners f names; on an error it closes those it
// opened.
func Listen(f Flags) (Listeners, error) {
	var lis Listeners
	// A method value would copy lis before the listeners are set.
	closeAll := func() { lis.Close() }
	var err error
	if lis.GRPC, err = net.Listen("tcp", f.Listen.GRPCAddr); err != nil {
		return lis, fmt.Errorf("gRPC listener: %w", err)
	}
	if lis.HTTP, err = net.Listen("tcp", f.Listen.HTTPAddr); err != nil {
		closeAll()
		return lis, fmt.Errorf("HTTP listener: %w", err)
	}
	if f.Listen.DebugAddr != "" {
		if lis.Debug, err = net.Listen("tcp", f.Listen.DebugAddr); err != nil {
			closeAll()
			return lis, fmt.Errorf("debug listener: %w", err)
		}
	}
	return lis, nil
}
