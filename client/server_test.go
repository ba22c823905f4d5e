package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	"github.com/orderexpiry/orderexpiry/internal/server"
	"github.com/orderexpiry/orderexpiry/internal/serverproc"
)

// testServer is the service running in the test process on loopback ports,
// built as the command builds it, from flags and environment variables.
type testServer struct {
	GRPCAddr string
	stop     context.CancelFunc
	exited   chan struct{}
	logs     *redistest.LockedBuffer
}

// startServer starts the service with env (REDIS_URL, AUTH_TOKENS, …; the
// memory store without REDIS_URL) and flags (after free ports for gRPC and
// HTTP, which they may override), and stops it when the test ends.
func startServer(t *testing.T, env map[string]string, flags ...string) *testServer {
	t.Helper()
	logs := &redistest.LockedBuffer{}
	f, err := server.ParseFlags(serverproc.Args(flags), func(k string) string { return env[k] }, logs)
	if err != nil {
		t.Fatalf("the server refused its flags: %v\n%s", err, logs)
	}
	lis, err := server.Listen(f)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(f.Config, server.NewLogger(f, logs))
	if err != nil {
		lis.Close()
		t.Fatalf("the server did not start: %v\n%s", err, logs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &testServer{GRPCAddr: lis.GRPC.Addr().String(), stop: cancel, exited: make(chan struct{}), logs: logs}
	go func() {
		defer close(s.exited)
		_ = srv.Run(ctx, lis)
	}()
	t.Cleanup(func() {
		s.Stop(t)
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})
	return s
}

// Stop stops the server and waits until it has; stopping it again does
// nothing.
func (s *testServer) Stop(t *testing.T) {
	s.stop()
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		t.Error("the server did not stop within 15 s")
	}
}

// selfSigned writes a certificate for 127.0.0.1, which signs itself, and
// its key into dir, and returns their paths: the server's pair and the
// client's CA at once.
func selfSigned(t *testing.T) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "orderexpiry test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}
