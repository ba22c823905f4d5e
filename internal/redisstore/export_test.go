package redisstore

import (
	"context"
	"time"
)

// MaxSweepSleep is the longest the sweeper sleeps when nothing wakes it.
const MaxSweepSleep = maxSweepSleep

// CheckoutUnannounced creates a pending order as Checkout does, but wakes no
// sweeper: the script's wake-up goes to a channel nobody listens to, as if it
// had been lost. It runs the script with EVAL, so that the sweeper's calls are
// the only EVALSHA calls Redis counts.
func (s *Store) CheckoutUnannounced(ctx context.Context, id string, ttl time.Duration) error {
	keys := s.keys.scriptKeys()
	keys[3] = s.keys.prefix + "nobody-listens"
	return checkoutScript.Eval(ctx, s.rdb, keys, s.args(id, ttl.Milliseconds(), "")...).Err()
}
