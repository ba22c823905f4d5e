package redisstore

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// The scripts store orders and events as strings (see scripts.go); this
// file reads them back. What does not parse here was not written by these
// scripts: the callers report it with Store.corrupt, as a fault of the
// store, never as the caller's mistake.

// parseRecord reads "<status> <created> <deadline> <closed> [r<n>]
// <metadata>".
func parseRecord(id, rec string, nowMs int64) (order.Order, error) {
	f := strings.SplitN(rec, " ", 5)
	if len(f) != 5 {
		return order.Order{}, fmt.Errorf("malformed record for order %q: %q", id, rec)
	}
	var ms [3]int64
	for i := range ms {
		v, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			return order.Order{}, fmt.Errorf("malformed record for order %q: %q", id, rec)
		}
		ms[i] = v
	}
	// "r<n> " before the metadata: rescheduled n times (see resched in
	// scripts.go); "t<ms> " or "a<ms> ": what the checkout of a pending
	// order asked for (see askedTok).
	meta, reschedules := f[4], 0
	var askedTTL time.Duration
	var askedAt time.Time
	for meta != "" && meta[0] >= 'a' && meta[0] <= 'z' {
		tok, rest, ok := strings.Cut(meta, " ")
		n, err := strconv.ParseInt(tok[1:], 10, 64)
		if !ok || err != nil || n < 1 {
			return order.Order{}, fmt.Errorf("malformed record for order %q: %q", id, rec)
		}
		switch tok[0] {
		case 'r':
			reschedules = int(n)
		case 't':
			askedTTL = time.Duration(n) * time.Millisecond
		case 'a':
			askedAt = time.UnixMilli(n)
		default:
			return order.Order{}, fmt.Errorf("malformed record for order %q: %q", id, rec)
		}
		meta = rest
	}
	md, err := decodeMetadata(meta)
	if err != nil {
		return order.Order{}, fmt.Errorf("order %q: %w", id, err)
	}
	o := order.Order{
		ID:          id,
		Status:      order.ParseStatus(f[0]),
		CreatedAt:   time.UnixMilli(ms[0]),
		Deadline:    time.UnixMilli(ms[1]),
		Metadata:    md,
		Reschedules: reschedules,
	}
	if o.Status == order.StatusPending {
		o.AskedTTL, o.AskedAt = askedTTL, askedAt
		o.TTLRemaining = time.Duration(ms[1]-nowMs) * time.Millisecond
	} else {
		o.ClosedAt = time.UnixMilli(ms[2])
	}
	return o, nil
}

// parseEvent reads an entry of the event stream: fields id (the order),
// c, d and x (created, deadline and expired, unix ms) and m (metadata).
func parseEvent(m redis.XMessage) (order.Event, error) {
	c, err := parseStreamID(m.ID)
	if err != nil {
		return order.Event{}, err
	}
	field := func(k string) string { s, _ := m.Values[k].(string); return s }
	var ms [3]int64
	for i, k := range []string{"c", "d", "x"} {
		if ms[i], err = strconv.ParseInt(field(k), 10, 64); err != nil {
			return order.Event{}, fmt.Errorf("event %s: field %s: %w", m.ID, k, err)
		}
	}
	md, err := decodeMetadata(field("m"))
	if err != nil {
		return order.Event{}, fmt.Errorf("event %s: %w", m.ID, err)
	}
	return order.Event{
		Offset:    c,
		OrderID:   field("id"),
		CreatedAt: time.UnixMilli(ms[0]),
		Deadline:  time.UnixMilli(ms[1]),
		ExpiredAt: time.UnixMilli(ms[2]),
		Metadata:  md,
	}, nil
}

// parseStreamID reads a stream entry id that Redis gave, as an offset. Its
// error, unlike order.ParseOffset's, does not blame a caller's cursor.
func parseStreamID(id string) (order.Offset, error) {
	c, err := order.ParseOffset(id)
	if err != nil {
		return order.Offset{}, fmt.Errorf("%q is not a stream entry id", id)
	}
	return c, nil
}

// encodeMetadata stores no metadata as the empty string, which keeps a
// pending order without metadata a few bytes smaller in Redis.
func encodeMetadata(md map[string]string) (string, error) {
	if len(md) == 0 {
		return "", nil
	}
	b, err := json.Marshal(md)
	return string(b), err
}

func decodeMetadata(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	var md map[string]string
	if err := json.Unmarshal([]byte(s), &md); err != nil {
		return nil, fmt.Errorf("malformed metadata: %w", err)
	}
	return md, nil
}
