package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/auth"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// config is everything the server can be told, by flag or by environment
// variable; a flag wins over its variable.
type config struct {
	grpcAddr     string
	httpAddr     string
	debugAddr    string
	redisURL     string
	redisCluster string
	// partitions is asked for when the store is new; 0: 1 on one Redis,
	// defaultClusterPartitions on a cluster.
	partitions      int
	limits          order.Limits
	retention       time.Duration
	watchBuffer     int
	maxWatchers     int
	maxBodyBytes    int
	shutdownTimeout time.Duration
	logLevel        slog.Level
	logJSON         bool

	// TLS for the gRPC and HTTP ports; with clientCA, clients must show a
	// certificate it signed.
	tlsCert, tlsKey, tlsClientCA string
	// TLS towards Redis (rediss:// URLs): a private CA, a client pair.
	redisCA, redisCert, redisKey string

	// Bearer tokens; none means authentication is off.
	tokens []string
	// authOpen names what needs no token: health, reflection, metrics,
	// openapi.
	authOpen map[string]bool
}

// defaultClusterPartitions spreads a new store over a cluster: with 64 the
// partitions' hash tags fall 21, 22 and 21 on the slot ranges redis-cli
// gives 3 masters (with 16 they fall 6, 6 and 4). Each partition costs every
// replica one sweeper and one blocked log reader.
const defaultClusterPartitions = 64

// openables are the names -auth-open accepts.
var openables = []string{"health", "reflection", "metrics", "openapi"}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	c := config{limits: order.DefaultLimits}
	fs := flag.NewFlagSet("orderexpiry", flag.ContinueOnError)
	fs.SetOutput(stderr)

	// Each option takes its default from its variable; a variable that
	// does not parse is an error unless the flag overrides it.
	envErrs := map[string]error{}
	fromEnv := func(name, envName, def string) string {
		if envName == "" {
			return def
		}
		if v := getenv(envName); v != "" {
			return v
		}
		return def
	}
	usage := func(u, envName string) string {
		if envName == "" {
			return u
		}
		return u + " ($" + envName + ")"
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
	}
	num := func(p *int, name, envName string, def int, u string) {
		v := fromEnv(name, envName, strconv.Itoa(def))
		n, err := strconv.Atoi(v)
		if err != nil {
			envErrs[name] = fmt.Errorf("%s=%q: not a whole number", envName, v)
		}
		fs.IntVar(p, name, n, usage(u, envName))
	}

	str(&c.grpcAddr, "grpc-addr", "GRPC_ADDR", ":9090", "gRPC listen address")
	str(&c.httpAddr, "http-addr", "HTTP_ADDR", ":8080", "REST, /healthz, /metrics and /openapi.json listen address")
	str(&c.debugAddr, "debug-addr", "DEBUG_ADDR", "", "listen address for /debug/pprof/ (profiles, goroutines, heap); empty: off. Keep it private")
	str(&c.redisURL, "redis-url", "REDIS_URL", "", "redis:// or rediss:// URL, with password and db; empty: the embedded in-memory store")
	str(&c.redisCluster, "redis-cluster-addrs", "REDIS_CLUSTER_ADDRS", "", "Redis Cluster seeds, host:port,host:port,... or redis://[user:password@]host:port?addr=host:port&addr=... (rediss:// for TLS); instead of REDIS_URL")
	num(&c.partitions, "redis-partitions", "REDIS_PARTITIONS", 0, fmt.Sprintf("partitions of a new store (recorded in Redis at the first start, never changed after); 0: 1 on one Redis, %d on a cluster", defaultClusterPartitions))
	str(&c.redisCA, "redis-ca", "REDIS_CA_FILE", "", "PEM file of the CA that signed Redis's certificate (rediss://), instead of the system's")
	str(&c.redisCert, "redis-cert", "REDIS_CERT_FILE", "", "PEM client certificate for Redis over TLS, when Redis asks for one")
	str(&c.redisKey, "redis-key", "REDIS_KEY_FILE", "", "PEM key of -redis-cert")
	str(&c.tlsCert, "tls-cert", "TLS_CERT_FILE", "", "PEM certificate for the gRPC and HTTP ports; with -tls-key, both serve TLS only")
	str(&c.tlsKey, "tls-key", "TLS_KEY_FILE", "", "PEM key of -tls-cert")
	str(&c.tlsClientCA, "tls-client-ca", "TLS_CLIENT_CA_FILE", "", "PEM CA file: clients of both ports must show a certificate it signed (mutual TLS)")
	var tokensFile, tokensList, open, logFormat, level string
	str(&tokensFile, "auth-tokens-file", "AUTH_TOKENS_FILE", "", "file of accepted bearer tokens, one a line; with $AUTH_TOKENS (comma-separated) and none given, authentication is off")
	tokensList = getenv("AUTH_TOKENS")
	str(&open, "auth-open", "AUTH_OPEN", "health,metrics,openapi", "what needs no token, from "+strings.Join(openables, ", ")+"; empty: everything needs one")
	dur(&c.limits.DefaultTTL, "default-ttl", "DEFAULT_TTL", "15m", "ttl of a checkout that gives none")
	dur(&c.limits.MaxTTL, "max-ttl", "MAX_TTL", "168h", "longest ttl a checkout may ask for")
	dur(&c.retention, "retention", "RETENTION", "24h", "how long closed orders and expiration events are kept")
	dur(&c.shutdownTimeout, "shutdown-timeout", "SHUTDOWN_TIMEOUT", "10s", "bound on the graceful stop")
	num(&c.limits.MaxMetadataEntries, "max-metadata-entries", "MAX_METADATA_ENTRIES", order.DefaultLimits.MaxMetadataEntries, "metadata entries an order may carry")
	num(&c.limits.MaxMetadataBytes, "max-metadata-bytes", "MAX_METADATA_BYTES", order.DefaultLimits.MaxMetadataBytes, "bytes of metadata (keys and values) an order may carry")
	num(&c.maxBodyBytes, "max-request-bytes", "MAX_REQUEST_BYTES", 64<<10, "largest request: gRPC message or REST body")
	num(&c.maxWatchers, "max-watchers", "MAX_WATCHERS", 10000, "watch streams one replica serves at once")
	num(&c.watchBuffer, "watch-buffer", "WATCH_BUFFER", 1024, "events a watcher may fall behind before it is closed with a cursor to resume from")
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
	if err := c.logLevel.UnmarshalText([]byte(level)); err != nil {
		return c, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	switch logFormat {
	case "text":
	case "json":
		c.logJSON = true
	default:
		return c, fmt.Errorf("log format %q: want text or json", logFormat)
	}
	c.authOpen = map[string]bool{}
	for _, name := range strings.Split(open, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if !contains(openables, name) {
			return c, fmt.Errorf("-auth-open: unknown %q; want some of %s", name, strings.Join(openables, ", "))
		}
		c.authOpen[name] = true
	}
	tokens, err := auth.LoadTokens(tokensFile, tokensList)
	if err != nil {
		return c, err
	}
	c.tokens = tokens
	if err := c.limits.Validate(); err != nil {
		return c, err
	}
	switch {
	case c.retention < time.Second:
		return c, fmt.Errorf("retention %s is too short; it must be at least 1s", c.retention)
	case c.watchBuffer < 1:
		return c, fmt.Errorf("watch buffer must be at least 1, got %d", c.watchBuffer)
	case c.maxWatchers < 1:
		return c, fmt.Errorf("max watchers must be at least 1, got %d", c.maxWatchers)
	case c.maxBodyBytes < 1024:
		return c, fmt.Errorf("max request bytes must be at least 1024, got %d", c.maxBodyBytes)
	case c.limits.MaxMetadataEntries < 0 || c.limits.MaxMetadataBytes < 0:
		return c, fmt.Errorf("metadata limits must not be negative")
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return c, fmt.Errorf("-tls-cert and -tls-key go together")
	case c.tlsClientCA != "" && c.tlsCert == "":
		return c, fmt.Errorf("-tls-client-ca needs -tls-cert and -tls-key")
	case (c.redisCert == "") != (c.redisKey == ""):
		return c, fmt.Errorf("-redis-cert and -redis-key go together")
	case c.redisURL != "" && c.redisCluster != "":
		return c, fmt.Errorf("REDIS_URL and REDIS_CLUSTER_ADDRS both name a store; give one")
	case c.partitions < 0 || c.partitions > order.MaxPartitions:
		return c, fmt.Errorf("-redis-partitions %d: want 1 to %d, or 0 for the default", c.partitions, order.MaxPartitions)
	}
	return c, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
