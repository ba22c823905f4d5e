package main

import (
	"testing"

	"github.com/orderexpiry/orderexpiry/internal/server"
)

// TestHealthURL: the health check asks the HTTP port on loopback when it
// listens on every address, its own address otherwise, over https when the
// port serves TLS.
func TestHealthURL(t *testing.T) {
	for _, tc := range []struct {
		addr, cert, want string
	}{
		{":8080", "", "http://127.0.0.1:8080/healthz"},
		{"0.0.0.0:8080", "", "http://127.0.0.1:8080/healthz"},
		{"[::]:8080", "", "http://127.0.0.1:8080/healthz"},
		{"10.1.2.3:18080", "", "http://10.1.2.3:18080/healthz"},
		{"[::1]:8080", "", "http://[::1]:8080/healthz"},
		{":8443", "server.pem", "https://127.0.0.1:8443/healthz"},
	} {
		f := server.Flags{Listen: server.ListenConfig{HTTPAddr: tc.addr}}
		f.TLS.Cert = tc.cert
		got, err := healthURL(f)
		if err != nil || got != tc.want {
			t.Errorf("healthURL(%q, tls %q) = %q, %v; want %q", tc.addr, tc.cert, got, err, tc.want)
		}
	}
	if _, err := healthURL(server.Flags{Listen: server.ListenConfig{HTTPAddr: "8080"}}); err == nil {
		t.Error("an address without a port was taken")
	}
}
