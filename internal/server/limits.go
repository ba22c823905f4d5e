package server

import (
	"errors"

	"github.com/orderexpiry/orderexpiry/internal/gateway"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// LimitsConfig bounds what one request may ask for and carry: the order
// limits of a checkout (order.Limits, whose defaults are
// order.DefaultLimits) and the size of a request on either port.
type LimitsConfig struct {
	order.Limits
	// MaxRequestBytes bounds a gRPC message, a REST body and a REST
	// request URI.
	MaxRequestBytes int
}

func (c *LimitsConfig) register(o *options) {
	c.Limits = order.DefaultLimits
	o.Duration(&c.DefaultTTL, "default-ttl", "DEFAULT_TTL", order.DefaultLimits.DefaultTTL, "ttl of a checkout that gives none")
	o.Duration(&c.MaxTTL, "max-ttl", "MAX_TTL", order.DefaultLimits.MaxTTL, "longest ttl a checkout may ask for")
	o.Int(&c.MaxMetadataEntries, "max-metadata-entries", "MAX_METADATA_ENTRIES", order.DefaultLimits.MaxMetadataEntries, "metadata entries an order may carry")
	o.Int(&c.MaxMetadataBytes, "max-metadata-bytes", "MAX_METADATA_BYTES", order.DefaultLimits.MaxMetadataBytes, "bytes of metadata (keys and values) an order may carry")
	o.Int(&c.MaxRequestBytes, "max-request-bytes", "MAX_REQUEST_BYTES", gateway.DefaultMaxBodyBytes, "largest gRPC message, REST body or REST request URI")
}

// parse checks the limits. A default ttl above the max ttl is blamed on
// whichever of the two the user gave.
func (c *LimitsConfig) parse(o *options) error {
	err := c.validate()
	var bad *badOption
	if errors.As(err, &bad) && bad.flag == "max-ttl" && !o.given("max-ttl") && o.given("default-ttl") {
		bad.flag = "default-ttl"
	}
	return err
}

// validate checks the limits; the rule between the two ttls is the
// domain's (order.Limits.Validate), named here by the flag to change.
func (c *LimitsConfig) validate() error {
	if err := c.Limits.Validate(); err != nil {
		if c.DefaultTTL <= 0 {
			return &badOption{flag: "default-ttl", err: err}
		}
		return optionErrorf("max-ttl", "%w; raise -max-ttl or lower -default-ttl", err)
	}
	switch {
	case c.MaxMetadataEntries < 0:
		return optionErrorf("max-metadata-entries", "metadata limits must not be negative, got %d", c.MaxMetadataEntries)
	case c.MaxMetadataBytes < 0:
		return optionErrorf("max-metadata-bytes", "metadata limits must not be negative, got %d", c.MaxMetadataBytes)
	case c.MaxRequestBytes < 1024:
		return optionErrorf("max-request-bytes", "max request bytes must be at least 1024, got %d", c.MaxRequestBytes)
	}
	return nil
}
