package server

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/auth"
	"github.com/orderexpiry/orderexpiry/internal/gateway"
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/watch"
)

// Flags are everything the server command can be told, by flag or by
// environment variable; a flag wins over its variable. Besides the server's
// Config they hold where to listen and how to log, which the caller of New
// acts on: Listen and NewLogger.
type Flags struct {
	Config

	// GRPCAddr and HTTPAddr are the listen addresses of the two ports;
	// DebugAddr, when not empty, that of /debug/pprof/.
	GRPCAddr, HTTPAddr, DebugAddr string
	// LogLevel is the lowest level logged; LogJSON asks for JSON lines
	// rather than text.
	LogLevel slog.Level
	LogJSON  bool
}

// openables are the names -auth-open accepts.
var openables = []string{"health", "reflection", "metrics", "openapi"}

// ParseFlags reads the command line args (without the program's name) and
// the environment through getenv, and checks what they say. Usage and flag
// errors are written to stderr; -h returns flag.ErrHelp.
func ParseFlags(args []string, getenv func(string) string, stderr io.Writer) (Flags, error) {
	return parseFlags(args, getenv, stderr, nil)
}

// flagDef is one flag, or one variable without a flag, as the
// configuration doc shows it (see FlagTable).
type flagDef struct {
	Name, Env, Default, Usage string
}

// parseFlags is ParseFlags; when defs is not nil, it appends every flag to
// it as it is defined.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer, defs *[]flagDef) (Flags, error) {
	c := Flags{Config: Config{Limits: order.DefaultLimits}}
	fs := flag.NewFlagSet("orderexpiry", flag.ContinueOnError)
	fs.SetOutput(stderr)

	// Each option takes its default from its variable; a variable that
	// does not parse is an error unless the flag overrides it.
	envErrs := map[string]error{}
	fromEnv := func(name, envName, def string) string {
		if defs != nil {
			*defs = append(*defs, flagDef{Name: name, Env: envName, Default: def})
		}
		if envName == "" {
			return def
		}
		if v := getenv(envName); v != "" {
			return v
		}
		return def
	}
	usage := func(u, envName string) string {
		if defs != nil {
			(*defs)[len(*defs)-1].Usage = u
		}
		if envName == "" {
			return u
		}
		return u + " ($" + envName + ")"
	}
	// envOnly reads a variable that has no flag.
	envOnly := func(envName, u string) string {
		if defs != nil {
			*defs = append(*defs, flagDef{Env: envName, Usage: u})
		}
		return getenv(envName)
	}
	str := func(p *string, name, envName, def, u string) {
		fs.StringVar(p, name, fromEnv(name, envName, def), usage(u, envName))
	}
	dur := func(p *time.Duration, name, envName, def, u string) {
		v := fromEnv(name, envName, def)
		d, err := time.ParseDuration(v)
		if err != nil {
			envErrs[name] = fmt.Errorf("%s=%q: not a duration (like 30s, 15m, 24h)", envName, v)
		}
		fs.DurationVar(p, name, d, usage(u, envName))
		// -h and the flag table write the default as the service's
		// messages write durations ("15m", not time.Duration's "15m0s").
		fs.Lookup(name).DefValue = order.FormatDuration(d)
		if defs != nil && err == nil {
			(*defs)[len(*defs)-1].Default = order.FormatDuration(d)
		}
	}
	boolean := func(p *bool, name, envName string, u string) {
		v := fromEnv(name, envName, "false")
		b, err := strconv.ParseBool(v)
		if err != nil {
			envErrs[name] = fmt.Errorf("%s=%q: not true or false", envName, v)
		}
		fs.BoolVar(p, name, b, usage(u, envName))
	}
	num := func(p *int, name, envName string, def int, u string) {
		v := fromEnv(name, envName, strconv.Itoa(def))
		n, err := strconv.Atoi(v)
		if err != nil {
			envErrs[name] = fmt.Errorf("%s=%q: not a whole number", envName, v)
		}
		fs.IntVar(p, name, n, usage(u, envName))
	}

	str(&c.GRPCAddr, "grpc-addr", "GRPC_ADDR", ":9090", "gRPC listen address (reflection and grpc.health.v1 included)")
	str(&c.HTTPAddr, "http-addr", "HTTP_ADDR", ":8080", "listen address of REST, /healthz, /livez, /metrics, /openapi.json and the dashboard (/ui/)")
	str(&c.DebugAddr, "debug-addr", "DEBUG_ADDR", "", "listen address for /debug/pprof/ (profiles, goroutines, heap); empty: off. Keep it private")
	str(&c.RedisURL, "redis-url", "REDIS_URL", "", "redis://[:password@]host:port/db or rediss://...; empty: the embedded in-memory store, of which nothing survives a restart")
	str(&c.RedisCluster, "redis-cluster-addrs", "REDIS_CLUSTER_ADDRS", "", "Redis Cluster seeds, host:port,host:port,... or redis://[user:password@]host:port?addr=host:port&addr=... (rediss:// for TLS); instead of REDIS_URL")
	str(&c.RedisSentinel, "redis-sentinel-addrs", "REDIS_SENTINEL_ADDRS", "", "Redis Sentinel instead of REDIS_URL: the sentinels, host:port,host:port,... or redis://[user:password@]host:port[/db]?addr=host:port&addr=... (Redis's user and password; rediss:// for TLS)")
	str(&c.RedisSentinelMaster, "redis-sentinel-master", "REDIS_SENTINEL_MASTER", "", "name of the master the sentinels watch (sentinel monitor <name> ...)")
	// A password has no flag: the command line is visible to every user of
	// the host.
	c.RedisSentinelPassword = envOnly("REDIS_SENTINEL_PASSWORD", "the sentinels' own password (requirepass in sentinel.conf); no flag, so that it stays off the command line")
	var durability string
	str(&durability, "durability", "DURABILITY", "fast", "what an OK to a write promises on Redis: strict (it survives one Redis failure: on every replica, or fsynced where there is none; otherwise UNAVAILABLE, safe to repeat) or fast (the Redis master has it)")
	num(&c.Partitions, "redis-partitions", "REDIS_PARTITIONS", 0, fmt.Sprintf("partitions of a new store (recorded in Redis at the first start, never changed after); 0: 1 on one Redis, %d on a cluster", DefaultClusterPartitions))
	str(&c.RedisCA, "redis-ca", "REDIS_CA_FILE", "", "PEM file of the CA that signed Redis's certificate (rediss://), instead of the system's")
	str(&c.RedisCert, "redis-cert", "REDIS_CERT_FILE", "", "PEM client certificate for Redis over TLS, when Redis asks for one")
	str(&c.RedisKey, "redis-key", "REDIS_KEY_FILE", "", "PEM key of -redis-cert")
	str(&c.TLSCert, "tls-cert", "TLS_CERT_FILE", "", "PEM certificate for the gRPC and HTTP ports; with -tls-key, both serve TLS only")
	str(&c.TLSKey, "tls-key", "TLS_KEY_FILE", "", "PEM key of -tls-cert")
	str(&c.TLSClientCA, "tls-client-ca", "TLS_CLIENT_CA_FILE", "", "PEM CA file: clients of both ports must show a certificate it signed (mutual TLS)")
	var tokensFile, tokensList, open, logFormat, level string
	str(&tokensFile, "auth-tokens-file", "AUTH_TOKENS_FILE", "", "file of accepted bearer tokens, one a line; with $AUTH_TOKENS (comma-separated) and none given, authentication is off")
	tokensList = envOnly("AUTH_TOKENS", "accepted bearer tokens, comma-separated, besides those of -auth-tokens-file; no flag, so that they stay off the command line")
	str(&open, "auth-open", "AUTH_OPEN", "health,metrics,openapi", "what needs no token, from "+strings.Join(openables, ", ")+"; empty: everything needs one")
	var allowOrigins, allowHosts string
	str(&allowOrigins, "allow-origins", "ALLOW_ORIGINS", "", "with no bearer token set: origins of web pages that may call the HTTP port besides its own, comma-separated (https://app.example.com), * for any")
	str(&allowHosts, "allow-hosts", "ALLOW_HOSTS", "", "with no bearer token set: Host names the HTTP port answers to besides IP addresses and localhost, comma-separated (orderexpiry.internal, *.example.com), * for any")
	dur(&c.Limits.DefaultTTL, "default-ttl", "DEFAULT_TTL", order.FormatDuration(order.DefaultLimits.DefaultTTL), "ttl of a checkout that gives none")
	dur(&c.Limits.MaxTTL, "max-ttl", "MAX_TTL", order.FormatDuration(order.DefaultLimits.MaxTTL), "longest ttl a checkout may ask for")
	dur(&c.Retention, "retention", "RETENTION", "24h", "how long closed orders stay readable and expiration events replayable")
	dur(&c.ShutdownTimeout, "shutdown-timeout", "SHUTDOWN_TIMEOUT", "10s", "bound on the graceful stop after SIGINT or SIGTERM")
	num(&c.Limits.MaxMetadataEntries, "max-metadata-entries", "MAX_METADATA_ENTRIES", order.DefaultLimits.MaxMetadataEntries, "metadata entries an order may carry")
	num(&c.Limits.MaxMetadataBytes, "max-metadata-bytes", "MAX_METADATA_BYTES", order.DefaultLimits.MaxMetadataBytes, "bytes of metadata (keys and values) an order may carry")
	num(&c.MaxBodyBytes, "max-request-bytes", "MAX_REQUEST_BYTES", 64<<10, "largest gRPC message, REST body or REST request URI")
	num(&c.MaxWatchers, "max-watchers", "MAX_WATCHERS", 10000, "watch streams one replica serves at once")
	num(&c.MaxConnections, "max-connections", "MAX_CONNECTIONS", 4096, "connections open at once on each port; past it the HTTP connection idle the longest is closed to make room, or the new one is")
	dur(&c.IdleTimeout, "idle-timeout", "IDLE_TIMEOUT", "60s", "closes an HTTP keep-alive connection, or a gRPC connection with no call, idle this long")
	dur(&c.ReadTimeout, "read-timeout", "READ_TIMEOUT", "10s", "bound on reading a REST request's headers, and then its body, and on a new gRPC connection's handshake")
	num(&c.MaxHeaderBytes, "max-header-bytes", "MAX_HEADER_BYTES", 32<<10, "largest metadata (header list) of a gRPC call; the HTTP port keeps net/http's 1 MiB (431 past it)")
	num(&c.MaxStreams, "max-streams", "MAX_STREAMS", 1000, "calls open at once on one gRPC connection; more wait for a free one")
	num(&c.MaxGroups, "max-groups", "MAX_GROUPS", 100, "consumer groups the store may hold")
	num(&c.MaxConsumers, "max-consumers", "MAX_CONSUMERS", 100, "ConsumeExpirations streams of one group one replica serves at once")
	num(&c.MaxGroupConsumers, "max-group-consumers", "MAX_GROUP_CONSUMERS", order.DefaultMaxGroupConsumers, "consumer names that may hold deliveries of one group at once (on each partition of a Redis store); past it a new name is refused until one settles or lapses")
	num(&c.MaxInFlight, "max-in-flight", "MAX_IN_FLIGHT", 1000, "largest max_in_flight of a consumer's stream and max_events of a pull")
	var pushHosts string
	str(&pushHosts, "push-allow-hosts", "PUSH_ALLOW_HOSTS", "", "hosts push groups may POST to, comma-separated: a name or IP as in the URL, *.example.com for the hosts under it, * for any; empty: push delivery is off")
	boolean(&c.Push.AllowPrivate, "push-allow-private", "PUSH_ALLOW_PRIVATE", "let push endpoints be at loopback, private or link-local addresses (checked after DNS, at every connection); off: refused")
	boolean(&c.Push.AllowHTTP, "push-allow-http", "PUSH_ALLOW_HTTP", "let push URLs be http://; off: https only")
	str(&c.GroupsFile, "groups-file", "GROUPS_FILE", "", "YAML or JSON file of consumer groups (push groups too) that every replica creates when missing, at its start and whenever the store can serve again, as after Redis was emptied; empty: none")
	num(&c.MaxReplays, "max-replays", "MAX_REPLAYS", watch.DefaultMaxReplays, "watches with a cursor that replay the log at once; the others wait their turn")
	dur(&c.WatchWriteTimeout, "watch-write-timeout", "WATCH_WRITE_TIMEOUT", order.FormatDuration(gateway.DefaultWatchWriteTimeout), "longest wait for one write of a REST watch; a client that has not taken what was sent for that long loses its watch and connection")
	num(&c.WatchBuffer, "watch-buffer", "WATCH_BUFFER", 1024, "events a watcher may fall behind the live fan-out; one further behind reads on from the log until it has caught up")
	str(&level, "log-level", "LOG_LEVEL", "info", "debug (one line per RPC), info, warn or error")
	str(&logFormat, "log-format", "LOG_FORMAT", "text", "text or json")

	if err := fs.Parse(args); err != nil {
		return c, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var names []string
	for name := range envErrs {
		if !set[name] {
			names = append(names, name)
		}
	}
	if len(names) > 0 {
		sort.Strings(names)
		return c, envErrs[names[0]]
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	d, err := redisstore.ParseDurability(durability)
	if err != nil {
		return c, fmt.Errorf("-durability: %w", err)
	}
	c.Durability = d
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return c, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	switch logFormat {
	case "text":
	case "json":
		c.LogJSON = true
	default:
		return c, fmt.Errorf("log format %q: want text or json", logFormat)
	}
	c.AuthOpen = map[string]bool{}
	for _, name := range strings.Split(open, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if !contains(openables, name) {
			return c, fmt.Errorf("-auth-open: unknown %q; want some of %s", name, strings.Join(openables, ", "))
		}
		c.AuthOpen[name] = true
	}
	for _, h := range strings.Split(pushHosts, ",") {
		if h = strings.TrimSpace(h); h == "" {
			continue
		}
		if strings.ContainsAny(h, "/:@ ") && !strings.HasPrefix(h, "[") && net.ParseIP(h) == nil {
			return c, fmt.Errorf("-push-allow-hosts: %q is not a host; give names such as hooks.example.com or *.example.com, without scheme, port or path", h)
		}
		c.Push.AllowHosts = append(c.Push.AllowHosts, h)
	}
	for _, o := range splitList(allowOrigins) {
		if u, err := url.Parse(o); o != "*" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/")) {
			return c, fmt.Errorf("-allow-origins: %q is not an origin; give scheme://host[:port] such as https://app.example.com, or *", o)
		}
		c.AllowOrigins = append(c.AllowOrigins, o)
	}
	for _, h := range splitList(allowHosts) {
		if strings.ContainsAny(h, "/@ ") {
			return c, fmt.Errorf("-allow-hosts: %q is not a host name; give names such as orderexpiry.internal or *.example.com, without scheme or path", h)
		}
		c.AllowHosts = append(c.AllowHosts, h)
	}
	if c.GroupsFile != "" {
		groups, err := loadGroupsFile(c.GroupsFile)
		if err != nil {
			return c, err
		}
		c.Groups = groups
	}
	tokens, err := auth.LoadTokens(tokensFile, tokensList)
	if err != nil {
		return c, err
	}
	c.Tokens = tokens
	if err := c.Limits.Validate(); err != nil {
		return c, err
	}
	switch {
	case c.Retention < time.Second:
		return c, fmt.Errorf("retention %s is too short; it must be at least 1s", order.FormatDuration(c.Retention))
	case c.WatchBuffer < 1:
		return c, fmt.Errorf("watch buffer must be at least 1, got %d", c.WatchBuffer)
	case c.MaxWatchers < 1:
		return c, fmt.Errorf("max watchers must be at least 1, got %d", c.MaxWatchers)
	case c.MaxConnections < 1:
		return c, fmt.Errorf("max connections must be at least 1, got %d", c.MaxConnections)
	case c.IdleTimeout <= 0 || c.ReadTimeout <= 0:
		return c, fmt.Errorf("-idle-timeout and -read-timeout must be more than zero")
	case c.MaxHeaderBytes < 1024:
		return c, fmt.Errorf("max header bytes must be at least 1024, got %d", c.MaxHeaderBytes)
	case c.MaxReplays < 1:
		return c, fmt.Errorf("max replays must be at least 1, got %d", c.MaxReplays)
	case c.WatchWriteTimeout <= 0:
		return c, fmt.Errorf("-watch-write-timeout must be more than zero")
	case c.MaxGroups < 1 || c.MaxConsumers < 1 || c.MaxInFlight < 1 || c.MaxGroupConsumers < 1:
		return c, fmt.Errorf("-max-groups, -max-consumers, -max-group-consumers and -max-in-flight must be at least 1")
	case c.MaxStreams < 1:
		return c, fmt.Errorf("max streams must be at least 1, got %d", c.MaxStreams)
	case c.MaxBodyBytes < 1024:
		return c, fmt.Errorf("max request bytes must be at least 1024, got %d", c.MaxBodyBytes)
	case c.Limits.MaxMetadataEntries < 0 || c.Limits.MaxMetadataBytes < 0:
		return c, fmt.Errorf("metadata limits must not be negative")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return c, fmt.Errorf("-tls-cert and -tls-key go together")
	case c.TLSClientCA != "" && c.TLSCert == "":
		return c, fmt.Errorf("-tls-client-ca needs -tls-cert and -tls-key")
	case (c.RedisCert == "") != (c.RedisKey == ""):
		return c, fmt.Errorf("-redis-cert and -redis-key go together")
	case countSet(c.RedisURL, c.RedisCluster, c.RedisSentinel) > 1:
		return c, fmt.Errorf("REDIS_URL, REDIS_CLUSTER_ADDRS and REDIS_SENTINEL_ADDRS each name a store; give one of them")
	case c.RedisSentinel == "" && (c.RedisSentinelMaster != "" || c.RedisSentinelPassword != ""):
		return c, fmt.Errorf("REDIS_SENTINEL_MASTER and REDIS_SENTINEL_PASSWORD are for Redis Sentinel: set REDIS_SENTINEL_ADDRS too")
	case c.Partitions < 0 || c.Partitions > order.MaxPartitions:
		return c, fmt.Errorf("-redis-partitions %d: want 1 to %d, or 0 for the default", c.Partitions, order.MaxPartitions)
	}
	return c, nil
}

// splitList returns the items of a comma-separated list, trimmed, without
// empty ones.
func splitList(list string) []string {
	var out []string
	for _, v := range strings.Split(list, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// countSet counts the values that are not empty.
func countSet(values ...string) int {
	n := 0
	for _, v := range values {
		if v != "" {
			n++
		}
	}
	return n
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// NewLogger returns the logger f asks for, writing to w.
func NewLogger(f Flags, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: f.LogLevel}
	if f.LogJSON {
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
	if lis.GRPC, err = net.Listen("tcp", f.GRPCAddr); err != nil {
		return lis, fmt.Errorf("gRPC listener: %w", err)
	}
	if lis.HTTP, err = net.Listen("tcp", f.HTTPAddr); err != nil {
		closeAll()
		return lis, fmt.Errorf("HTTP listener: %w", err)
	}
	if f.DebugAddr != "" {
		if lis.Debug, err = net.Listen("tcp", f.DebugAddr); err != nil {
			closeAll()
			return lis, fmt.Errorf("debug listener: %w", err)
		}
	}
	return lis, nil
}
