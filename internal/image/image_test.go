package image_test

import (
	"archive/tar"
	"context"
	"debug/elf"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/image"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
	"github.com/orderexpiry/orderexpiry/internal/serverproc"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestImageRuns builds the image as `make image` does, writes it as an OCI
// layout, reads it back, unpacks its layers into a directory and runs the
// binary found there against a real Redis: /healthz answers SERVING, a
// Checkout succeeds through the gRPC port, and the health check the config
// declares passes.
func TestImageRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the server and an image (skipped with -short)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "orderexpiry")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/orderexpiry/orderexpiry/cmd/server")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	img, err := image.Build(image.Options{Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	layoutDir := filepath.Join(dir, "layout")
	if err := image.WriteLayout(layoutDir, "orderexpiry:test", img); err != nil {
		t.Fatal(err)
	}

	// What a runtime reads: the layout's index, its one manifest, the
	// config and the layers.
	read := readLayout(t, layoutDir)
	if mt, _ := read.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s, want %s", mt, types.OCIManifestSchema1)
	}
	cfg, err := read.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	if cfg.OS != "linux" || !slices.Equal(c.Entrypoint, []string{image.BinaryPath}) || c.User != "65532:65532" {
		t.Errorf("os %q, entrypoint %q, user %q; want linux, [%s], 65532:65532", cfg.OS, c.Entrypoint, c.User, image.BinaryPath)
	}
	for _, p := range []string{"9090/tcp", "8080/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed: %v", p, c.ExposedPorts)
		}
	}
	if c.Healthcheck == nil || !slices.Equal(c.Healthcheck.Test, []string{"CMD", image.BinaryPath, "healthcheck"}) {
		t.Errorf("health check %+v", c.Healthcheck)
	}

	root := filepath.Join(dir, "root")
	unpack(t, read, root)
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil || !strings.Contains(string(passwd), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd names no user 65532: %v\n%s", err, passwd)
	}
	if certs, err := os.ReadFile(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")); err != nil || !strings.Contains(string(certs), "BEGIN CERTIFICATE") {
		t.Errorf("no CA certificates in the image: %v", err)
	}
	inImage := filepath.Join(root, image.BinaryPath)
	assertStatic(t, inImage)

	redis := redistest.Start(t)
	proc, err := serverproc.Start(serverproc.Options{Binary: inImage, Env: []string{"REDIS_URL=" + redis.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		proc.Stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("server log:\n%s", proc.Logs())
		}
	})
	if err := proc.WaitHealthy(10*time.Second, serverproc.Health{}); err != nil {
		t.Fatal(err)
	}
	res, err := http.Get("http://" + proc.HTTPAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "SERVING") {
		t.Errorf("/healthz: %s %s", res.Status, body)
	}
	conn, err := grpc.NewClient(proc.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	co, err := pb.NewOrderServiceClient(conn).Checkout(ctx, &pb.CheckoutRequest{OrderId: "img-1", Ttl: durationpb.New(time.Minute)})
	if err != nil || !co.GetCreated() || co.GetOrder().GetStatus() != pb.OrderStatus_ORDER_STATUS_PENDING {
		t.Fatalf("Checkout through the gRPC port: %v, %v", co, err)
	}

	// The declared health check, as a runtime runs it: the command, with
	// the container's environment.
	probe := func(httpAddr string) error {
		cmd := exec.Command(inImage, c.Healthcheck.Test[2:]...)
		cmd.Env = append(os.Environ(), "HTTP_ADDR="+httpAddr)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return errors.New(strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := probe(proc.HTTPAddr); err != nil {
		t.Errorf("the health check fails against a serving server: %v", err)
	}
	// And it fails where nothing serves: stopped, the server's port is free.
	proc.Stop(syscall.SIGTERM)
	if err := probe(proc.HTTPAddr); err == nil {
		t.Errorf("the health check passes with the server stopped")
	}
}

// readLayout returns the one image of the OCI layout in dir.
func readLayout(t *testing.T, dir string) v1.Image {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "orderexpiry:test" {
		t.Fatalf("layout index %+v, want one image named orderexpiry:test", m.Manifests)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// unpack writes the image's flattened file system into root.
func unpack(t *testing.T, img v1.Image, root string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var f *os.File
			if f, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm()); err == nil {
				_, err = io.Copy(f, tr)
				err = errors.Join(err, f.Close())
			}
		default:
			t.Fatalf("unexpected entry %s of type %c", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// assertStatic fails unless the binary at path needs no dynamic loader: an
// image from scratch has none.
func assertStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s asks for a dynamic loader: build it with CGO_ENABLED=0", path)
		}
	}
}
