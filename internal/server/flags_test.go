package server

import (
	"io"
	"log/slog"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/push"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/rpc"
)

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseFlags(t *testing.T) {
	defaults := Flags{
		Listen: ListenConfig{GRPCAddr: ":9090", HTTPAddr: ":8080"},
		Log:    LogConfig{Level: slog.LevelInfo},
		Config: Config{
			Store:           StoreConfig{Retention: 24 * time.Hour},
			Limits:          LimitsConfig{Limits: order.DefaultLimits, MaxRequestBytes: 64 << 10},
			Watch:           WatchConfig{Buffer: 1024, MaxWatchers: 10000, MaxReplays: 8, WriteTimeout: 10 * time.Second},
			ShutdownTimeout: 10 * time.Second,
			Conns:           ConnConfig{MaxConnections: 4096, IdleTimeout: time.Minute, ReadTimeout: 10 * time.Second, MaxHeaderBytes: 32 << 10, MaxStreams: 1000},
			Groups:          GroupsConfig{GroupLimits: rpc.GroupLimits{MaxGroups: 100, MaxConsumers: 100, MaxInFlight: 1000}, MaxGroupConsumers: 1000},
			Auth:            AuthConfig{Open: map[string]bool{"health": true, "metrics": true, "openapi": true}},
		},
	}
	with := func(f func(*Flags)) Flags {
		c := defaults
		c.Auth.Open = maps.Clone(defaults.Auth.Open)
		f(&c)
		return c
	}
	allEnv := map[string]string{
		"GRPC_ADDR":        "127.0.0.1:1",
		"HTTP_ADDR":        "127.0.0.1:2",
		"DEBUG_ADDR":       "127.0.0.1:6060",
		"REDIS_URL":        "redis://localhost:6379/3",
		"DEFAULT_TTL":      "1m",
		"MAX_TTL":          "2h",
		"RETENTION":        "90m",
		"SHUTDOWN_TIMEOUT": "3s",
		"LOG_LEVEL":        "debug",
	}
	fromEnv := with(func(c *Flags) {
		c.Listen.GRPCAddr = "127.0.0.1:1"
		c.Listen.HTTPAddr = "127.0.0.1:2"
		c.Listen.DebugAddr = "127.0.0.1:6060"
		c.Store.RedisURL = "redis://localhost:6379/3"
		c.Limits.DefaultTTL = time.Minute
		c.Limits.MaxTTL = 2 * time.Hour
		c.Store.Retention = 90 * time.Minute
		c.ShutdownTimeout = 3 * time.Second
		c.Log.Level = slog.LevelDebug
	})
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    Flags
		wantErr string // a substring of the error; empty: no error
	}{
		{name: "defaults", want: defaults},
		{name: "empty variables mean unset", env: map[string]string{"GRPC_ADDR": "", "DEFAULT_TTL": "", "LOG_LEVEL": ""}, want: defaults},
		{name: "every variable", env: allEnv, want: fromEnv},
		{name: "every flag", args: []string{
			"-grpc-addr", "127.0.0.1:3", "-http-addr=127.0.0.1:4", "-debug-addr=:6061", "-redis-url", "rediss://h:6380/1",
			"-default-ttl", "30s", "-max-ttl", "1h", "-retention", "2h", "-shutdown-timeout", "1s",
			"-watch-buffer", "7", "-log-level", "warn",
		}, want: with(func(c *Flags) {
			c.Listen.GRPCAddr = "127.0.0.1:3"
			c.Listen.HTTPAddr = "127.0.0.1:4"
			c.Listen.DebugAddr = ":6061"
			c.Store.RedisURL = "rediss://h:6380/1"
			c.Limits.DefaultTTL = 30 * time.Second
			c.Limits.MaxTTL = time.Hour
			c.Store.Retention = 2 * time.Hour
			c.ShutdownTimeout = time.Second
			c.Watch.Buffer = 7
			c.Log.Level = slog.LevelWarn
		})},
		{name: "flags beat variables", env: allEnv, args: []string{
			"-grpc-addr=:1", "-http-addr=:2", "-debug-addr=", "-redis-url=", "-default-ttl=2m", "-max-ttl=3h",
			"-retention=5s", "-shutdown-timeout=4s", "-log-level=error",
		}, want: with(func(c *Flags) {
			c.Listen.GRPCAddr = ":1"
			c.Listen.HTTPAddr = ":2"
			c.Limits.DefaultTTL = 2 * time.Minute
			c.Limits.MaxTTL = 3 * time.Hour
			c.Store.Retention = 5 * time.Second
			c.ShutdownTimeout = 4 * time.Second
			c.Log.Level = slog.LevelError
		})},
		{name: "one flag beats its variable and leaves the others", env: allEnv, args: []string{"--max-ttl", "5h"},
			want: func() Flags { c := fromEnv; c.Limits.MaxTTL = 5 * time.Hour; return c }()},
		{name: "log level is case-insensitive", env: map[string]string{"LOG_LEVEL": "WARN"}, want: with(func(c *Flags) { c.Log.Level = slog.LevelWarn })},
		{name: "max equal to default", args: []string{"-default-ttl=1h", "-max-ttl=1h"},
			want: with(func(c *Flags) { c.Limits.DefaultTTL = time.Hour; c.Limits.MaxTTL = time.Hour })},
		{name: "retention of exactly 1s", args: []string{"-retention=1s"}, want: with(func(c *Flags) { c.Store.Retention = time.Second })},
		{name: "watch buffer of 1", args: []string{"-watch-buffer=1"}, want: with(func(c *Flags) { c.Watch.Buffer = 1 })},

		{name: "a flag beats a bad variable", env: map[string]string{"DEFAULT_TTL": "soon"}, args: []string{"-default-ttl=1m"},
			want: with(func(c *Flags) { c.Limits.DefaultTTL = time.Minute })},
		{name: "json logs", env: map[string]string{"LOG_FORMAT": "json"}, want: with(func(c *Flags) { c.Log.JSON = true })},
		{name: "strict durability", args: []string{"-durability=strict"}, want: with(func(c *Flags) { c.Store.Durability = redisstore.DurabilityStrict })},
		{name: "durability from the environment", env: map[string]string{"DURABILITY": "strict"}, want: with(func(c *Flags) { c.Store.Durability = redisstore.DurabilityStrict })},
		{name: "tokens from the environment", env: map[string]string{"AUTH_TOKENS": "a, b"}, want: with(func(c *Flags) { c.Auth.Tokens = []string{"a", "b"} })},
		{name: "nothing open", args: []string{"-auth-open="}, want: with(func(c *Flags) { c.Auth.Open = map[string]bool{} })},
		{name: "limits", args: []string{"-max-watchers=5", "-max-request-bytes=2048", "-max-metadata-entries=3", "-max-metadata-bytes=100"},
			want: with(func(c *Flags) {
				c.Watch.MaxWatchers, c.Limits.MaxRequestBytes = 5, 2048
				c.Limits.MaxMetadataEntries, c.Limits.MaxMetadataBytes = 3, 100
			})},
		{name: "connection limits", args: []string{"-max-connections=10", "-idle-timeout=2s", "-read-timeout=1s", "-max-header-bytes=4096", "-max-streams=3"},
			want: with(func(c *Flags) {
				c.Conns.MaxConnections, c.Conns.IdleTimeout, c.Conns.ReadTimeout, c.Conns.MaxHeaderBytes, c.Conns.MaxStreams = 10, 2*time.Second, time.Second, 4096, 3
			})},
		{name: "sentinel", env: map[string]string{"REDIS_SENTINEL_ADDRS": "s1:26379,s2:26379", "REDIS_SENTINEL_MASTER": "m", "REDIS_SENTINEL_PASSWORD": "pw"},
			want: with(func(c *Flags) {
				c.Store.RedisSentinel, c.Store.RedisSentinelMaster, c.Store.RedisSentinelPassword = "s1:26379,s2:26379", "m", "pw"
			})},
		{name: "sentinel by flags", args: []string{"-redis-sentinel-addrs=redis://:pw@s1:26379?addr=s2:26379", "-redis-sentinel-master=m"},
			want: with(func(c *Flags) {
				c.Store.RedisSentinel, c.Store.RedisSentinelMaster = "redis://:pw@s1:26379?addr=s2:26379", "m"
			})},
		{name: "sentinel flag beats an empty REDIS_URL", env: map[string]string{"REDIS_URL": ""}, args: []string{"-redis-sentinel-addrs=s1:26379"},
			want: with(func(c *Flags) { c.Store.RedisSentinel = "s1:26379" })},
		{name: "URL and sentinels", env: map[string]string{"REDIS_URL": "redis://h:6379/0", "REDIS_SENTINEL_ADDRS": "s1:26379"},
			wantErr: "REDIS_URL, REDIS_CLUSTER_ADDRS and REDIS_SENTINEL_ADDRS each name a store; give one"},
		{name: "unknown durability", args: []string{"-durability=safe"}, wantErr: "-durability: \"safe\" is not a durability mode: give strict"},
		{name: "cluster and sentinels", args: []string{"-redis-cluster-addrs=h:7000", "-redis-sentinel-addrs=s1:26379"},
			wantErr: "give one of them"},
		{name: "URL and cluster", args: []string{"-redis-url=redis://h:6379/0", "-redis-cluster-addrs=h:7000"},
			wantErr: "give one of them"},
		{name: "sentinel master without sentinels", env: map[string]string{"REDIS_SENTINEL_MASTER": "m"},
			wantErr: "set REDIS_SENTINEL_ADDRS too"},
		{name: "sentinel password without sentinels", env: map[string]string{"REDIS_URL": "redis://h:6379/0", "REDIS_SENTINEL_PASSWORD": "pw"},
			wantErr: "set REDIS_SENTINEL_ADDRS too"},
		{name: "no connections", args: []string{"-max-connections=0"}, wantErr: "max connections must be at least 1, got 0"},
		{name: "zero idle timeout", args: []string{"-idle-timeout=0s"}, wantErr: "-idle-timeout and -read-timeout must be more than zero"},
		{name: "tiny header limit", args: []string{"-max-header-bytes=10"}, wantErr: "max header bytes must be at least 1024, got 10"},
		{name: "replay limits", args: []string{"-max-replays=2", "-watch-write-timeout=1s"},
			want: with(func(c *Flags) { c.Watch.MaxReplays, c.Watch.WriteTimeout = 2, time.Second })},
		{name: "no replays", args: []string{"-max-replays=0"}, wantErr: "max replays must be at least 1, got 0"},
		{name: "group limits", args: []string{"-max-groups=2", "-max-consumers=3", "-max-in-flight=4"},
			want: with(func(c *Flags) { c.Groups.MaxGroups, c.Groups.MaxConsumers, c.Groups.MaxInFlight = 2, 3, 4 })},
		{name: "no groups", args: []string{"-max-groups=0"}, wantErr: "-max-groups, -max-consumers, -max-group-consumers and -max-in-flight must be at least 1"},
		{name: "no streams", args: []string{"-max-streams=0"}, wantErr: "max streams must be at least 1, got 0"},
		{name: "push flags", args: []string{"-push-allow-hosts= hooks.example.com,*.example.org,::1", "-push-allow-private", "-push-allow-http"},
			want: with(func(c *Flags) {
				c.Push.Policy = push.Policy{AllowHosts: []string{"hooks.example.com", "*.example.org", "::1"}, AllowPrivate: true, AllowHTTP: true}
			})},
		{name: "push variables", env: map[string]string{"PUSH_ALLOW_HOSTS": "*", "PUSH_ALLOW_PRIVATE": "true", "PUSH_ALLOW_HTTP": "0"},
			want: with(func(c *Flags) { c.Push.Policy = push.Policy{AllowHosts: []string{"*"}, AllowPrivate: true} })},
		{name: "push host with a scheme", args: []string{"-push-allow-hosts=https://hooks.example.com"}, wantErr: `-push-allow-hosts: "https://hooks.example.com" is not a host`},
		{name: "bad PUSH_ALLOW_HTTP", env: map[string]string{"PUSH_ALLOW_HTTP": "yes please"}, wantErr: `PUSH_ALLOW_HTTP="yes please": not true or false`},
		{name: "bad log format", args: []string{"-log-format=xml"}, wantErr: `log format "xml"`},
		{name: "unknown open endpoint", args: []string{"-auth-open=health,admin"}, wantErr: `unknown "admin"`},
		{name: "missing tokens file", args: []string{"-auth-tokens-file=/nonexistent/tokens"}, wantErr: "auth tokens file"},
		{name: "certificate without key", args: []string{"-tls-cert=c.pem"}, wantErr: "-tls-cert and -tls-key go together"},
		{name: "client CA without certificate", args: []string{"-tls-client-ca=ca.pem"}, wantErr: "-tls-client-ca needs"},
		{name: "bad MAX_WATCHERS", env: map[string]string{"MAX_WATCHERS": "lots"}, wantErr: `MAX_WATCHERS="lots": not a whole number`},
		{name: "bad DEFAULT_TTL", env: map[string]string{"DEFAULT_TTL": "soon"}, wantErr: `DEFAULT_TTL="soon": not a duration`},
		{name: "bad MAX_TTL", env: map[string]string{"MAX_TTL": "10"}, wantErr: `MAX_TTL="10": not a duration`},
		{name: "bad RETENTION", env: map[string]string{"RETENTION": "1 day"}, wantErr: `RETENTION="1 day"`},
		{name: "bad SHUTDOWN_TIMEOUT", env: map[string]string{"SHUTDOWN_TIMEOUT": "x"}, wantErr: `SHUTDOWN_TIMEOUT="x"`},
		{name: "bad flag duration", args: []string{"-default-ttl", "soon"}, wantErr: `invalid value "soon" for flag -default-ttl`},
		{name: "bad flag duration for retention", args: []string{"-retention=1d"}, wantErr: "-retention"},
		{name: "bad watch buffer", args: []string{"-watch-buffer=many"}, wantErr: "-watch-buffer"},
		{name: "watch buffer of 0", args: []string{"-watch-buffer=0"}, wantErr: "watch buffer must be at least 1, got 0"},
		{name: "max-ttl below default-ttl by flag", args: []string{"-default-ttl=2h", "-max-ttl=1h"}, wantErr: "max ttl 1h is less than the default ttl 2h"},
		{name: "max-ttl below default-ttl by env", env: map[string]string{"DEFAULT_TTL": "200h"}, wantErr: "max ttl 168h is less than the default ttl 200h"},
		{name: "zero default-ttl", args: []string{"-default-ttl=0s"}, wantErr: "default ttl must be more than zero"},
		{name: "retention below 1s", args: []string{"-retention=999ms"}, wantErr: "retention 999ms is too short; it must be at least 1s"},
		{name: "retention below 1s by env", env: map[string]string{"RETENTION": "10ms"}, wantErr: "retention 10ms is too short"},
		{name: "unknown flag", args: []string{"-verbose"}, wantErr: "flag provided but not defined: -verbose"},
		{name: "stray argument", args: []string{"serve"}, wantErr: `unexpected argument "serve"`},
		{name: "stray argument after flags", args: []string{"-retention=1h", "extra", "more"}, wantErr: `unexpected argument "extra"`},
		{name: "bad log level by flag", args: []string{"-log-level=loud"}, wantErr: `log level "loud": want debug, info, warn or error`},
		{name: "bad log level by env", env: map[string]string{"LOG_LEVEL": "trace"}, wantErr: `log level "trace"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFlags(tt.args, mapEnv(tt.env), io.Discard)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseFlags = %+v, nil; want an error containing %q", got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseFlags error %q does not contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFlags = %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseFlags =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

// TestParseFlagsWritesUsageToStderr checks that flag errors go to the
// given writer, not to the process's stderr.
func TestParseFlagsWritesUsageToStderr(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown flag", args: []string{"-nope"}, want: "-grpc-addr"},
		{name: "help", args: []string{"-h"}, want: "$DEFAULT_TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf strings.Builder
			if _, err := ParseFlags(tt.args, mapEnv(nil), &buf); err == nil {
				t.Fatal("ParseFlags succeeded, want an error")
			}
			if !strings.Contains(buf.String(), tt.want) {
				t.Errorf("usage %q does not mention %q", buf.String(), tt.want)
			}
		})
	}
}
