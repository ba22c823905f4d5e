package filter

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

func TestToken(t *testing.T) {
	f, err := Parse("status = PENDING")
	if err != nil {
		t.Fatal(err)
	}
	g, err := Parse("status = EXPIRED")
	if err != nil {
		t.Fatal(err)
	}
	k := Key{Deadline: t0.UnixMilli(), ID: "abc-1"}
	tok := EncodeToken(k, f, false, t0)
	if got, err := DecodeToken(tok, f, false, t0.Add(time.Hour)); err != nil || got != k {
		t.Fatalf("DecodeToken = %v, %v; want %v", got, err, k)
	}
	flipped := []byte(tok)
	flipped[len(flipped)/2] ^= 1
	tests := []struct {
		name, token string
		f           *Filter
		desc        bool
		now         time.Time
		want        string
	}{
		{"other filter", tok, g, false, t0, "another filter"},
		{"other order", tok, f, true, t0, "another filter or order_by"},
		{"expired", tok, f, false, t0.Add(TokenLifetime + time.Second), "has expired (page tokens last 24h)"},
		{"future", tok, f, false, t0.Add(-time.Hour), "future"},
		{"damaged", string(flipped), f, false, t0, "page_token"},
		{"not base64", "!!!", f, false, t0, "not a page token"},
		{"too short", base64.RawURLEncoding.EncodeToString([]byte{1, 2, 3}), f, false, t0, "not a page token"},
		{"group id", "my-group", f, false, t0, "not a page token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeToken(tt.token, tt.f, tt.desc, tt.now)
			if order.KindOf(err) != order.KindInvalid || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("DecodeToken = %v, want KindInvalid saying %q", err, tt.want)
			}
		})
	}
}

func TestParseOrderBy(t *testing.T) {
	for s, want := range map[string]bool{"": false, "deadline": false, " deadline  asc ": false, "deadline desc": true} {
		if desc, err := ParseOrderBy(s); err != nil || desc != want {
			t.Errorf("ParseOrderBy(%q) = %v, %v; want %v", s, desc, err, want)
		}
	}
	for _, s := range []string{"create_time", "deadline down", "deadline desc, order_id"} {
		if _, err := ParseOrderBy(s); order.KindOf(err) != order.KindInvalid {
			t.Errorf("ParseOrderBy(%q) = %v, want KindInvalid", s, err)
		}
	}
}
