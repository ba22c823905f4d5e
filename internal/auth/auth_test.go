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
		{"two spaces", method, []string{"Bearer  s3cret-one"}, codes.Unauthenticated},
		{"a tab", method, []string{"Bearer\ts3cret-one"}, codes.Unauthenticated},
		{"trailing space", method, []string{"Bearer s3cret-one "}, codes.Unauthenticated},
		{"leading space", method, []string{" Bearer s3cret-one"}, codes.Unauthenticated},
		{"two words", method, []string{"Bearer s3cret-one s3cret-two"}, codes.Unauthenticated},
		{"two headers, both right", method, []string{"Bearer s3cret-one", "Bearer s3cret-two"}, codes.Unauthenticated},
		{"two headers, the first right", method, []string{"Bearer s3cret-one", "Bearer wrong"}, codes.Unauthenticated},
		{"open health", "/grpc.health.v1.Health/Check", nil, codes.OK},
		{"closed reflection", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", nil, codes.Unauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.header != nil {
				md := metadata.MD{}
				md.Append("authorization", tc.header...)
				ctx = metadata.NewIncomingContext(ctx, md)
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

func TestBearerToken(t *testing.T) {
	tests := []struct {
		header string
		token  string // empty: refused
	}{
		{"Bearer abc", "abc"},
		{"bearer abc", "abc"},
		{"BEARER abc", "abc"},
		{"Bearer A-z0_9.~+/", "A-z0_9.~+/"},
		{"Bearer abc==", "abc=="},
		{"Bearer abc", "abc"},
		{"Bearer", ""},
		{"Bearer ", ""},
		{"Bearer =", ""},
		{"Bearer ==abc", ""},
		{"Bearer ab=c", ""},
		{"Bearer  abc", ""},
		{"Bearer\tabc", ""},
		{"Bearer abc ", ""},
		{"Bearer abc\t", ""},
		{" Bearer abc", ""},
		{"Bearerabc", ""},
		{"Bearer abc def", ""},
		{"Bearer abc,", ""},
		{"Bearer ab\"c", ""},
		{"Bearer ab\u00e9", ""},
		{"Basic abc", ""},
		{"Bearer: abc", ""},
	}
	for _, tc := range tests {
		t.Run(tc.header, func(t *testing.T) {
			token, ok := bearerToken(tc.header)
			if ok != (tc.token != "") || (ok && token != tc.token) {
				t.Fatalf("bearerToken(%q) = %q, %v; want %q", tc.header, token, ok, tc.token)
			}
		})
	}
}

func TestLoadTokensRefusesWhatNoClientCanSend(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("# comment\ngood-one\nbad token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file, list string
		want             string // part of the error
	}{
		{name: "space in the file", file: file, want: "token 2 of the auth tokens file"},
		{name: "quote in the list", list: `ok, "quoted"`, want: "token 2 of AUTH_TOKENS"},
		{name: "equals sign inside", list: "a=b", want: "token 1 of AUTH_TOKENS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadTokens(tc.file, tc.list)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadTokens = %v, want an error naming %q", err, tc.want)
			}
			for _, tok := range []string{"bad token", "quoted", "a=b"} {
				if strings.Contains(err.Error(), tok) {
					t.Fatalf("the error %q repeats the token", err)
				}
			}
		})
	}
	if _, err := LoadTokens("", "abc==, A-z0_9.~+/"); err != nil {
		t.Fatalf("valid tokens: %v", err)
	}
}
