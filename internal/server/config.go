package server

import (
	"time"
)

// Config is what the server is built from: one sub-config per part of the
// service, each registering its own flags and variables with their
// defaults, and checking what they say (see options). ParseFlags fills it;
// the zero value of a field is not its flag's default, so set every field.
type Config struct {
	// Store says which store serves (Redis, a Redis Cluster, Redis
	// Sentinel, or the embedded memory store) and how.
	Store StoreConfig
	// TLS is the gRPC and HTTP ports' TLS.
	TLS TLSConfig
	// Auth says who may call, and from which web pages.
	Auth AuthConfig
	// Limits bound what one request may ask for and carry.
	Limits LimitsConfig
	// Conns bound what one client may hold open on the ports.
	Conns ConnConfig
	// Watch bounds the watches and their buffers.
	Watch WatchConfig
	// Groups bound the consumer groups, and name the groups file.
	Groups GroupsConfig
	// Push says which endpoints push groups may name.
	Push PushConfig

	// ShutdownTimeout bounds the graceful stop.
	ShutdownTimeout time.Duration

	// Tracing installs the OpenTelemetry instrumentation of gRPC, REST and
	// Redis calls, whose spans go to the global tracer provider; the
	// command sets it when tracing.Setup turned tracing on (tracing has no
	// flag: it reads the standard OTEL_* variables, see internal/tracing).
	Tracing bool
}

// register registers the options of every sub-config, in the order the
// flag table of docs/configuration.md shows them.
func (c *Config) register(o *options) {
	c.Store.register(o)
	c.TLS.register(o)
	c.Auth.register(o)
	c.Limits.register(o)
	c.Conns.register(o)
	c.Watch.register(o)
	c.Groups.register(o)
	c.Push.register(o)
	o.Duration(&c.ShutdownTimeout, "shutdown-timeout", "SHUTDOWN_TIMEOUT", 10*time.Second, "bound on the graceful stop after SIGINT or SIGTERM")
}

// parse turns the parsed options into the sub-configs' fields and checks
// them, in the order they were registered.
func (c *Config) parse(o *options) error {
	for _, parse := range []func(*options) error{
		c.Store.parse, c.TLS.parse, c.Auth.parse, c.Limits.parse, c.Conns.parse,
		c.Watch.parse, c.Groups.parse, c.Push.parse,
	} {
		if err := parse(o); err != nil {
			return err
		}
	}
	return nil
}
