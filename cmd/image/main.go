// Command image writes the service's container image, built without a
// Docker daemon or a registry (internal/image), as an OCI image layout
// directory and as a tarball that `docker load` and `podman load` take.
// `make image` builds the static binary and runs it.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/orderexpiry/orderexpiry/internal/image"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	binary := fs.String("binary", "", "the server built with CGO_ENABLED=0 GOOS=linux (required)")
	arch := fs.String("arch", runtime.GOARCH, "the binary's GOARCH")
	ca := fs.String("ca-certs", image.DefaultCACerts, "PEM bundle of CA certificates to put in the image")
	dir := fs.String("layout", "", "write an OCI image layout into this directory (replaced)")
	tar := fs.String("tar", "", "write a tarball for docker load / podman load to this file")
	tag := fs.String("tag", "orderexpiry:latest", "the image's name in the layout and the tarball")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *binary == "" || (*dir == "" && *tar == "") {
		return fmt.Errorf("give -binary and at least one of -layout and -tar")
	}
	img, err := image.Build(image.Options{Binary: *binary, CACerts: *ca, Arch: *arch})
	if err != nil {
		return err
	}
	ref, err := name.NewTag(*tag)
	if err != nil {
		return fmt.Errorf("-tag %q: %w", *tag, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	if *dir != "" {
		if err := image.WriteLayout(*dir, ref.String(), img); err != nil {
			return fmt.Errorf("the OCI layout: %w", err)
		}
		fmt.Printf("%s %s: OCI layout in %s\n", ref, digest, *dir)
	}
	if *tar != "" {
		if err := tarball.WriteToFile(*tar, ref, img); err != nil {
			return fmt.Errorf("the tarball: %w", err)
		}
		fmt.Printf("%s %s: tarball %s\n", ref, digest, *tar)
	}
	return nil
}
