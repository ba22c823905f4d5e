package rpc

import (
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/push"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// The push settings a group gets when its creation leaves them out, and
// their bounds.
const (
	defaultPushConcurrency = 10
	maxPushConcurrency     = 100
	defaultPushTimeout     = 10 * time.Second
	minPushTimeout         = 10 * time.Millisecond
)

// eventJSON writes events as the REST API does (the gateway's marshaler
// options), for the bodies of push requests.
var eventJSON = protojson.MarshalOptions{EmitDefaultValues: true}

// EventJSON is an event of a group as the REST API writes it: the JSON of
// the ExpirationEvent a consumer of the group receives, without a cursor
// (as in ConsumeExpirations: a group's deliveries are not a place in the
// watch's log; the webhook-id names the event). It is the body of a push
// request.
func EventJSON(ev order.Event) ([]byte, error) {
	p := eventToProto(ev)
	p.Cursor = ""
	return eventJSON.Marshal(p)
}

// pushConfig checks a creation's push settings against the service's
// policy and fills in their defaults; nil is a group without push. Its
// errors are KindInvalid and name the field.
func (s *Service) pushConfig(req *pb.PushConfig, ackDeadline time.Duration) (order.PushConfig, error) {
	if req == nil {
		return order.PushConfig{}, nil
	}
	if req.GetSecretFingerprint() != "" {
		return order.PushConfig{}, order.Fail(order.ReasonInvalidPushConfig, "push_config.secret_fingerprint", "push_config.secret_fingerprint is output only; leave it out and give push_config.secret")
	}
	if _, err := s.push.CheckURL(req.GetUrl()); err != nil {
		return order.PushConfig{}, err
	}
	if err := push.CheckSecret(req.GetSecret()); err != nil {
		return order.PushConfig{}, err
	}
	p := order.PushConfig{URL: req.GetUrl(), Secret: req.GetSecret(), MaxConcurrency: defaultPushConcurrency, Timeout: min(defaultPushTimeout, ackDeadline/2)}
	if n := req.GetMaxConcurrency(); n != 0 {
		if n < 1 || n > maxPushConcurrency {
			return order.PushConfig{}, order.Fail(order.ReasonInvalidPushConfig, "push_config.max_concurrency", "push_config.max_concurrency %d is out of range: give 1 to %d, or leave it out for %d", n, maxPushConcurrency, defaultPushConcurrency)
		}
		p.MaxConcurrency = int(n)
	}
	if d := req.GetTimeout(); d != nil {
		most := ackDeadline / 2
		if err := d.CheckValid(); err != nil || d.AsDuration() < minPushTimeout || d.AsDuration() > most {
			return order.PushConfig{}, order.Fail(order.ReasonInvalidPushConfig, "push_config.timeout",
				"push_config.timeout %s is out of range: give %s to half the ack_deadline (%s), so that an attempt ends before the event is due again, or leave it out for %s",
				order.FormatDuration(d.AsDuration()), order.FormatDuration(minPushTimeout), order.FormatDuration(most), order.FormatDuration(p.Timeout))
		}
		p.Timeout = d.AsDuration().Truncate(time.Millisecond)
	}
	return p, nil
}

// pushToProto shows a group's push settings, the secret by its fingerprint
// only; nil for a group without push.
func pushToProto(p order.PushConfig) *pb.PushConfig {
	if !p.Enabled() {
		return nil
	}
	return &pb.PushConfig{
		Url:               p.URL,
		SecretFingerprint: p.Fingerprint(),
		MaxConcurrency:    int32(p.MaxConcurrency),
		Timeout:           durationpb.New(p.Timeout),
	}
}
