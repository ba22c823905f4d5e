// Package image builds the service's container image without a Docker
// daemon or a registry (no base image can be pulled, so it starts from
// scratch): one layer holding the static server binary, an /etc/passwd and
// /etc/group that name the non-root user it runs as, and the CA
// certificates it needs to reach Redis, push endpoints or a tracing
// collector over TLS. The config declares the entrypoint, the user, the
// ports and a health check (Docker's Healthcheck field: the OCI image spec
// has none, and Kubernetes ignores it in favour of its own probes).
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// BinaryPath is where the server is in the image, its entrypoint.
	BinaryPath = "/usr/local/bin/orderexpiry"
	// UID and GID are the non-root user's, distroless's "nonroot".
	UID = 65532
	GID = 65532
	// DefaultCACerts is the bundle Debian's ca-certificates package keeps,
	// and where the image holds its own: where Go's crypto/x509 looks
	// first on Linux.
	DefaultCACerts = "/etc/ssl/certs/ca-certificates.crt"
)

// Ports are the ports the image exposes: gRPC, and HTTP (REST, /healthz,
// /metrics, /openapi.json, the dashboard), the server's defaults.
var Ports = []string{"9090/tcp", "8080/tcp"}

// Healthcheck is the health check the config declares: the binary's own
// probe of /healthz (the image has no shell and no curl).
var Healthcheck = v1.HealthConfig{
	Test:        []string{"CMD", BinaryPath, "healthcheck"},
	Interval:    10 * time.Second,
	Timeout:     3 * time.Second,
	StartPeriod: 10 * time.Second,
	Retries:     3,
}

// Options say what goes into the image.
type Options struct {
	// Binary is the server built for Linux with CGO_ENABLED=0: nothing in
	// the image could load a shared library.
	Binary string
	// CACerts is a PEM bundle; DefaultCACerts when empty.
	CACerts string
	// Arch is the binary's GOARCH, amd64 when empty.
	Arch string
	// Created is the image's creation time and every file's; the zero
	// time gives the Unix epoch, so that the same inputs give the same
	// image digest.
	Created time.Time
}

// Build returns the image, as OCI media types.
func Build(o Options) (v1.Image, error) {
	if o.CACerts == "" {
		o.CACerts = DefaultCACerts
	}
	if o.Arch == "" {
		o.Arch = "amd64"
	}
	if o.Created.IsZero() {
		o.Created = time.Unix(0, 0)
	}
	o.Created = o.Created.UTC()
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("the server binary: %w", err)
	}
	certs, err := os.ReadFile(o.CACerts)
	if err != nil {
		return nil, fmt.Errorf("the CA certificates (on Debian: apt-get install ca-certificates): %w", err)
	}
	rootfs, err := layerTar(o.Created, bin, certs)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(rootfs)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: o.Created}, CreatedBy: "orderexpiry cmd/image", Comment: "the server, its user and the CA certificates",
	}})
	if err != nil {
		return nil, err
	}
	ports := map[string]struct{}{}
	for _, p := range Ports {
		ports[p] = struct{}{}
	}
	hc := Healthcheck
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = o.Arch, "linux"
	cfg.Created = v1.Time{Time: o.Created}
	cfg.Config = v1.Config{
		Entrypoint:   []string{BinaryPath},
		User:         strconv.Itoa(UID) + ":" + strconv.Itoa(GID),
		WorkingDir:   "/home/nonroot",
		Env:          []string{"PATH=/usr/local/bin"},
		ExposedPorts: ports,
		Healthcheck:  &hc,
		Labels: map[string]string{
			"org.opencontainers.image.title":       "orderexpiry",
			"org.opencontainers.image.description": "order expiry over gRPC and REST, on Redis",
		},
	}
	return mutate.ConfigFile(img, cfg)
}

// layerTar is the image's one layer: the directories, the user, the CA
// certificates and the binary, every entry dated created.
func layerTar(created time.Time, bin, certs []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: created, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: created, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, GID)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", GID)
	steps := []func() error{
		func() error { return dir("etc", 0o755, 0) },
		func() error { return file("etc/passwd", 0o644, []byte(passwd)) },
		func() error { return file("etc/group", 0o644, []byte(group)) },
		func() error { return dir("etc/ssl", 0o755, 0) },
		func() error { return dir("etc/ssl/certs", 0o755, 0) },
		func() error { return file(DefaultCACerts[1:], 0o644, certs) },
		func() error { return dir("home", 0o755, 0) },
		func() error { return dir("home/nonroot", 0o700, UID) },
		// Go's os.TempDir for anything that wants one.
		func() error { return dir("tmp", 0o1777, 0) },
		func() error { return dir("usr", 0o755, 0) },
		func() error { return dir("usr/local", 0o755, 0) },
		func() error { return dir(path.Dir(BinaryPath[1:]), 0o755, 0) },
		func() error { return file(BinaryPath[1:], 0o755, bin) },
		tw.Close,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, fmt.Errorf("the image's layer: %w", err)
		}
	}
	return buf.Bytes(), nil
}

// WriteLayout writes img as an OCI image layout in dir, replacing what was
// there, its manifest named ref (org.opencontainers.image.ref.name).
func WriteLayout(dir, ref string, img v1.Image) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref}))
}
