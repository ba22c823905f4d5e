package server

import (
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/rpc"
)

// errorSettings names the flag an operator changes to lift each refusal
// that a setting of this server governs. The domain's messages say what to
// change ("raise the limit", "allow the host") without naming a flag; the
// service adds the flag to the message and to the error's details (see
// rpc.Settings). TestErrorSettingsAreFlags holds each to a flag of
// flags.go.
var errorSettings = rpc.Settings{
	order.ReasonPushDisabled:          "-push-allow-hosts",
	order.ReasonPushHostNotAllowed:    "-push-allow-hosts",
	order.ReasonPushHTTPNotAllowed:    "-push-allow-http",
	order.ReasonPushPrivateNotAllowed: "-push-allow-private",
	order.ReasonTooManyWatchers:       "-max-watchers",
	order.ReasonTooManyGroups:         "-max-groups",
	order.ReasonTooManyStreams:        "-max-consumers",
	order.ReasonTooManyConsumers:      "-max-group-consumers",
	order.ReasonInFlightLimit:         "-max-in-flight",
}
