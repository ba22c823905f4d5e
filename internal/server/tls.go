package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLSConfig is the TLS of the gRPC and HTTP ports: with a certificate and
// its key, both serve TLS only; with ClientCA too, clients must show a
// certificate it signed.
type TLSConfig struct {
	Cert, Key, ClientCA string
}

func (c *TLSConfig) register(o *options) {
	o.String(&c.Cert, "tls-cert", "TLS_CERT_FILE", "", "PEM certificate for the gRPC and HTTP ports; with -tls-key, both serve TLS only")
	o.String(&c.Key, "tls-key", "TLS_KEY_FILE", "", "PEM key of -tls-cert")
	o.String(&c.ClientCA, "tls-client-ca", "TLS_CLIENT_CA_FILE", "", "PEM CA file: clients of both ports must show a certificate it signed (mutual TLS)")
}

func (c *TLSConfig) parse(*options) error { return c.validate() }

// validate checks that the files named go together.
func (c *TLSConfig) validate() error {
	switch {
	case (c.Cert == "") != (c.Key == ""):
		return fmt.Errorf("-tls-cert and -tls-key go together: give both, or neither")
	case c.ClientCA != "" && c.Cert == "":
		return fmt.Errorf("-tls-client-ca needs -tls-cert and -tls-key: mutual TLS is TLS first")
	}
	return nil
}

// loadServerTLS returns the TLS configuration of the gRPC and HTTP ports, or
// nil when no certificate is configured.
func loadServerTLS(cfg TLSConfig) (*tls.Config, error) {
	if cfg.Cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.ClientCA != "" {
		pool, err := loadPool(cfg.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("TLS client CA: %w", err)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// loadPool reads a PEM file of CA certificates.
func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
