package auth

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestCheck(t *testing.T) {
	tok := New([]string{"s3cret-one", "s3cret-two"}, []string{OpenServices["health"]})
	const method = "/orderexpiry.v1.OrderService/Checkout"
	tests := []struct {
		name   string
		method string
		header []string
		want   codes.Code
	}{
		{"first token", method, []string{"Bearer s3cret-one"}, codes.OK},
		{"second token", method, []string{"Bearer s3cret-two"}, codes.OK},
		{"scheme in any case", method, []string{"bearer s3cret-one"}, codes.OK},
		{"no header", method, nil, codes.Unauthenticated},
		{"wrong token", method, []string{"Bearer s3cret-three"}, codes.Unauthenticated},
		{"prefix of a token", method, []string{"Bearer s3cret"}, codes.Unauthenticated},
		{"basic scheme", method, []string{"Basic czNjcmV0LW9uZQ=="}, codes.Unauthenticated},
		{"no scheme", method, []string{"s3cret-one"}, codes.Unauthenticated},
		{"empty token", method, []string{"Bearer "}, codes.Unauthenticated},
		{"open health", "/grpc.health.v1.Health/Check", nil, codes.OK},
		{"closed reflection", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", nil, codes.Unauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.header != nil {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", tc.header[0]))
			}
			err := tok.Check(ctx, tc.method)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("the error %q repeats a token", err)
			}
		})
	}
}

func TestLoadTokens(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("# service A, then B\nalpha\n\n  beta  \n  # revoked, gone: omega\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadTokens(file, "gamma, delta")
	if err != nil {
		t.Fatal(err)
	}
	if want := "gamma delta alpha beta"; strings.Join(got, " ") != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := LoadTokens(filepath.Join(t.TempDir(), "missing"), ""); err == nil {
		t.Fatal("a missing tokens file gave no error")
	}
}
