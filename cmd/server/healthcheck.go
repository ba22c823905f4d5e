package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/server"
)

// healthcheck asks the /healthz of the server that args and the
// environment describe, on loopback, and fails unless it answers 200.
func healthcheck(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	f, err := server.ParseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	url, err := healthURL(f)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// The server's own certificate names its public host, not loopback:
	// what is probed here is the process beside us, not who it is.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s: %s", url, res.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// healthURL is the /healthz of f's HTTP port, on loopback when the port
// listens on every address.
func healthURL(f server.Flags) (string, error) {
	host, port, err := net.SplitHostPort(f.Listen.HTTPAddr)
	if err != nil {
		return "", fmt.Errorf("healthcheck: -http-addr %q: %w", f.Listen.HTTPAddr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	scheme := "http"
	if f.TLS.Cert != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/healthz", nil
}
