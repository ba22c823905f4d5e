package server

import (
	"io"
	"strings"
	"testing"
)

// TestSubConfigErrors: each sub-config refuses each bad value with an error
// that starts with the setting the user gave, its flag (-max-streams: ...)
// or its variable (MAX_STREAMS: ...), and says what to give instead.
func TestSubConfigErrors(t *testing.T) {
	tests := []struct {
		config      string
		flag, env   string // the setting, by flag and by variable
		value, want string // a bad value, and what the error says of it
	}{
		{"store", "durability", "DURABILITY", "safe", `"safe" is not a durability mode: give strict`},
		{"store", "redis-partitions", "REDIS_PARTITIONS", "-1", "-1 partitions: want 1 to 1024, or 0 for the default"},
		{"store", "redis-partitions", "REDIS_PARTITIONS", "1025", "1025 partitions: want 1 to 1024"},
		{"store", "retention", "RETENTION", "500ms", "retention 500ms is too short; it must be at least 1s"},
		{"auth", "auth-open", "AUTH_OPEN", "health,admin", `unknown "admin"; want some of health, reflection, metrics, openapi`},
		{"auth", "allow-origins", "ALLOW_ORIGINS", "ftp://app.example.com", `"ftp://app.example.com" is not an origin; give scheme://host[:port]`},
		{"auth", "allow-origins", "ALLOW_ORIGINS", "https://app.example.com/path", "is not an origin"},
		{"auth", "allow-hosts", "ALLOW_HOSTS", "https://orderexpiry.internal", "is not a host name; give names such as orderexpiry.internal"},
		{"limits", "default-ttl", "DEFAULT_TTL", "0s", "default ttl must be more than zero, got 0s"},
		{"limits", "max-ttl", "MAX_TTL", "1m", "max ttl 1m is less than the default ttl 15m; raise -max-ttl or lower -default-ttl"},
		{"limits", "max-metadata-entries", "MAX_METADATA_ENTRIES", "-1", "metadata limits must not be negative, got -1"},
		{"limits", "max-metadata-bytes", "MAX_METADATA_BYTES", "-5", "metadata limits must not be negative, got -5"},
		{"limits", "max-request-bytes", "MAX_REQUEST_BYTES", "1023", "max request bytes must be at least 1024, got 1023"},
		{"conns", "max-connections", "MAX_CONNECTIONS", "0", "max connections must be at least 1, got 0"},
		{"conns", "idle-timeout", "IDLE_TIMEOUT", "0s", "must be more than zero, got 0s"},
		{"conns", "read-timeout", "READ_TIMEOUT", "-1s", "must be more than zero, got -1s"},
		{"conns", "max-header-bytes", "MAX_HEADER_BYTES", "1000", "max header bytes must be at least 1024, got 1000"},
		{"conns", "max-streams", "MAX_STREAMS", "0", "max streams must be at least 1, got 0"},
		{"watch", "max-watchers", "MAX_WATCHERS", "0", "max watchers must be at least 1, got 0"},
		{"watch", "max-replays", "MAX_REPLAYS", "0", "max replays must be at least 1, got 0"},
		{"watch", "watch-write-timeout", "WATCH_WRITE_TIMEOUT", "0s", "must be more than zero, got 0s"},
		{"watch", "watch-buffer", "WATCH_BUFFER", "0", "watch buffer must be at least 1, got 0"},
		{"groups", "max-groups", "MAX_GROUPS", "0", "must be at least 1, got 0"},
		{"groups", "max-consumers", "MAX_CONSUMERS", "-1", "must be at least 1, got -1"},
		{"groups", "max-group-consumers", "MAX_GROUP_CONSUMERS", "0", "must be at least 1, got 0"},
		{"groups", "max-in-flight", "MAX_IN_FLIGHT", "0", "must be at least 1, got 0"},
		{"push", "push-allow-hosts", "PUSH_ALLOW_HOSTS", "hooks.example.com:443", `"hooks.example.com:443" is not a host; give names such as hooks.example.com`},
		{"log", "log-level", "LOG_LEVEL", "loud", `log level "loud": want debug, info, warn or error`},
		{"log", "log-format", "LOG_FORMAT", "xml", `log format "xml": want text or json`},
	}
	for _, tt := range tests {
		for _, by := range []struct {
			how  string
			args []string
			env  map[string]string
			name string
		}{
			{"flag", []string{"-" + tt.flag + "=" + tt.value}, nil, "-" + tt.flag},
			{"variable", nil, map[string]string{tt.env: tt.value}, tt.env},
		} {
			t.Run(tt.config+"/"+tt.flag+"/"+by.how, func(t *testing.T) {
				_, err := ParseFlags(by.args, mapEnv(by.env), io.Discard)
				if err == nil {
					t.Fatalf("%s %q was taken", by.name, tt.value)
				}
				if want := by.name + ": "; !strings.HasPrefix(err.Error(), want) {
					t.Errorf("error %q does not start with %q", err, want)
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("error %q does not say %q", err, tt.want)
				}
			})
		}
	}
}

// TestSubConfigPairs: the settings that go together are refused alone, with
// an error that names each of them.
func TestSubConfigPairs(t *testing.T) {
	tests := []struct {
		config string
		args   []string
		env    map[string]string
		want   []string
	}{
		{config: "store", env: map[string]string{"REDIS_URL": "redis://h:6379", "REDIS_CLUSTER_ADDRS": "h:7000"},
			want: []string{"REDIS_URL, REDIS_CLUSTER_ADDRS and REDIS_SENTINEL_ADDRS each name a store; give one of them"}},
		{config: "store", args: []string{"-redis-sentinel-master=m"}, want: []string{"REDIS_SENTINEL_MASTER", "set REDIS_SENTINEL_ADDRS too"}},
		{config: "store", args: []string{"-redis-key=k.pem"}, want: []string{"-redis-cert and -redis-key go together: give both, or neither"}},
		{config: "tls", args: []string{"-tls-key=k.pem"}, want: []string{"-tls-cert and -tls-key go together: give both, or neither"}},
		{config: "tls", env: map[string]string{"TLS_CLIENT_CA_FILE": "ca.pem"}, want: []string{"-tls-client-ca needs -tls-cert and -tls-key"}},
		{config: "limits", env: map[string]string{"DEFAULT_TTL": "200h"}, want: []string{"DEFAULT_TTL: max ttl 168h is less than the default ttl 200h; raise -max-ttl or lower -default-ttl"}},
		{config: "limits", args: []string{"-default-ttl=2h", "-max-ttl=1h"}, want: []string{"-max-ttl: max ttl 1h is less than the default ttl 2h"}},
		{config: "auth", env: map[string]string{"AUTH_TOKENS": "good,not a token"}, want: []string{"token 2 of AUTH_TOKENS", "is not a bearer token"}},
		{config: "groups", args: []string{"-groups-file=/nonexistent/groups.yaml"}, want: []string{"-groups-file: ", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.config+"/"+tt.want[0], func(t *testing.T) {
			_, err := ParseFlags(tt.args, mapEnv(tt.env), io.Discard)
			if err == nil {
				t.Fatal("taken")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}
