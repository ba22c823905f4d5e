package order

import (
	"fmt"
	"time"
	"unicode/utf8"
)

// Limits bound what a checkout may ask for.
type Limits struct {
	// DefaultTTL is used when a checkout gives no ttl.
	DefaultTTL time.Duration
	// MaxTTL is the longest ttl a checkout may ask for.
	MaxTTL time.Duration
	// MaxMetadataEntries, MaxMetadataKeyBytes, MaxMetadataValueBytes and
	// MaxMetadataBytes bound the metadata of one order; it is kept in the
	// store for the whole life of the order and sent with its expiration.
	MaxMetadataEntries    int
	MaxMetadataKeyBytes   int
	MaxMetadataValueBytes int
	MaxMetadataBytes      int
}

// DefaultLimits are the limits when none are configured.
var DefaultLimits = Limits{
	DefaultTTL:            15 * time.Minute,
	MaxTTL:                7 * 24 * time.Hour,
	MaxMetadataEntries:    32,
	MaxMetadataKeyBytes:   64,
	MaxMetadataValueBytes: 1024,
	MaxMetadataBytes:      8192,
}

// MaxIDBytes is the longest order id.
const MaxIDBytes = 128

// ValidateID checks an order id. Ids are made of the characters that need no
// escaping in a URL path segment (RFC 3986 "unreserved"): letters, digits and
// "-", "_", ".", "~". That keeps them safe as parts of store keys, as REST
// path segments (where ":" would be read as a custom verb and "/" as a new
// segment) and in logs. The ids "." and ".." are refused too: as path
// segments they mean this and the parent directory, which URL clients
// resolve away (RFC 3986, section 5.2.4), so that GET /v1/orders/.. would
// never reach the order.
func ValidateID(field, id string) error {
	if id == "" {
		return Fail(ReasonInvalidID, field, "%s is required", field)
	}
	if len(id) > MaxIDBytes {
		return Fail(ReasonInvalidID, field, "%s is %d bytes long; the limit is %d", field, len(id), MaxIDBytes)
	}
	if id == "." || id == ".." {
		return Fail(ReasonInvalidID, field, "%s %q is a relative path segment, which URL clients remove from a path; use another id (dots are fine beside other characters)", field, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == '~':
		case c < 0x20 || c == 0x7f:
			return Fail(ReasonInvalidID, field, "%s has a non-printable character (byte 0x%02x at offset %d); use letters, digits and - _ . ~", field, c, i)
		case c >= 0x80:
			return Fail(ReasonInvalidID, field, "%s has a non-ASCII character at offset %d; use letters, digits and - _ . ~", field, i)
		default:
			return Fail(ReasonInvalidID, field, "%s has the character %q at offset %d; use letters, digits and - _ . ~", field, c, i)
		}
	}
	return nil
}

// CheckoutTTL returns the ttl a checkout asked for, or the default when it
// asked for none (has is false), after checking it against the limits. The
// stores count in whole milliseconds, so a ttl is rounded up to one.
func (l Limits) CheckoutTTL(ttl time.Duration, has bool) (time.Duration, error) {
	if !has {
		return l.DefaultTTL, nil
	}
	if ttl <= 0 {
		return 0, Fail(ReasonInvalidTTL, "ttl", "ttl must be more than zero (got %s); leave it out for the default of %s", FormatDuration(ttl), FormatDuration(l.DefaultTTL))
	}
	// Round up first (as the stores will), then compare: the rounded ttl
	// is the one that must stay within the maximum.
	if r := ttl % time.Millisecond; r != 0 && ttl <= l.MaxTTL {
		ttl += time.Millisecond - r
	}
	if ttl > l.MaxTTL {
		return 0, Fail(ReasonInvalidTTL, "ttl", "ttl %s is more than the maximum of %s", FormatDuration(ttl), FormatDuration(l.MaxTTL))
	}
	return ttl, nil
}

// ValidateMetadata checks the metadata of a checkout against the limits.
func (l Limits) ValidateMetadata(md map[string]string) error {
	if len(md) > l.MaxMetadataEntries {
		return Fail(ReasonInvalidMetadata, "metadata", "metadata has %d entries; the limit is %d", len(md), l.MaxMetadataEntries)
	}
	total := 0
	for k, v := range md {
		switch {
		case k == "":
			return Fail(ReasonInvalidMetadata, "metadata", "metadata has an empty key")
		case len(k) > l.MaxMetadataKeyBytes:
			return Fail(ReasonInvalidMetadata, "metadata", "metadata key %q is %d bytes long; the limit is %d", Clip(k), len(k), l.MaxMetadataKeyBytes)
		case !printable(k):
			return Fail(ReasonInvalidMetadata, "metadata", "metadata key %q must be printable UTF-8", Clip(k))
		case len(v) > l.MaxMetadataValueBytes:
			return Fail(ReasonInvalidMetadata, "metadata", "metadata[%q] is %d bytes long; the limit is %d", k, len(v), l.MaxMetadataValueBytes)
		case !utf8.ValidString(v):
			return Fail(ReasonInvalidMetadata, "metadata", "metadata[%q] must be valid UTF-8", k)
		}
		total += len(k) + len(v)
	}
	if total > l.MaxMetadataBytes {
		return Fail(ReasonInvalidMetadata, "metadata", "metadata is %d bytes in all; the limit is %d", total, l.MaxMetadataBytes)
	}
	return nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// Validate checks the limits themselves, for configuration errors.
func (l Limits) Validate() error {
	switch {
	case l.DefaultTTL <= 0:
		return fmt.Errorf("default ttl must be more than zero, got %s", FormatDuration(l.DefaultTTL))
	case l.MaxTTL < l.DefaultTTL:
		return fmt.Errorf("max ttl %s is less than the default ttl %s", FormatDuration(l.MaxTTL), FormatDuration(l.DefaultTTL))
	}
	return nil
}
