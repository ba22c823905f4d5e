package gateway

import "testing"

func TestCrossSiteHosts(t *testing.T) {
	cs := CrossSite{Check: true, AllowHosts: []string{"orderexpiry.internal", "*.example.com"}}
	for host, want := range map[string]bool{
		"127.0.0.1:8080":             true,
		"[::1]:8080":                 true,
		"localhost:8080":             true,
		"LOCALHOST.":                 true,
		"app.localhost:8080":         true,
		"orderexpiry.internal:8080":  true,
		"a.example.com":              true,
		"example.com":                false,
		"evil-example.com":           false,
		"rebind.example:8080":        false,
		"localhost.evil.example:80":  false,
		"orderexpiry.internal.evil:": false,
	} {
		if got := cs.hostAllowed(host); got != want {
			t.Errorf("hostAllowed(%q) = %v, want %v", host, got, want)
		}
	}
	if !(CrossSite{AllowHosts: []string{"*"}}).hostAllowed("anything.example") {
		t.Error(`"*" does not allow every host`)
	}
}

func TestCrossSiteOrigins(t *testing.T) {
	cs := CrossSite{Check: true, AllowOrigins: []string{"https://app.example.com"}}
	for _, tc := range []struct {
		origin, host string
		want         bool
	}{
		{"http://127.0.0.1:8080", "127.0.0.1:8080", true},
		{"http://localhost", "localhost:80", true},
		{"https://localhost", "localhost:443", true},
		{"https://app.example.com", "127.0.0.1:8080", true},
		{"https://APP.example.com", "127.0.0.1:8080", true},
		{"http://127.0.0.1:9999", "127.0.0.1:8080", false},
		{"http://evil.example", "127.0.0.1:8080", false},
		{"null", "127.0.0.1:8080", false},
		{"file://", "127.0.0.1:8080", false},
		{"https://app.example.com.evil", "127.0.0.1:8080", false},
	} {
		if got := cs.originAllowed(tc.origin, tc.host); got != tc.want {
			t.Errorf("originAllowed(%q, Host %q) = %v, want %v", tc.origin, tc.host, got, tc.want)
		}
	}
}
