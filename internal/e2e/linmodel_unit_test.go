package e2e

import (
	"math"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestLinModel holds the order model to small histories written by hand,
// legal and not, so that the linearizability test's verdicts mean what
// they say.
func TestLinModel(t *testing.T) {
	base := time.UnixMilli(1_000_000)
	// op is a call from a to b ms after base; b < 0 for an unknown outcome.
	op := func(client int, in linInput, out linOutput, a, b int) porcupine.Operation {
		call := base.Add(time.Duration(a) * time.Millisecond)
		var ret time.Time
		if b >= 0 {
			ret = base.Add(time.Duration(b) * time.Millisecond)
		}
		in.Lo, in.Hi = linWindow(call, ret)
		o := porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call.UnixNano(), Return: math.MaxInt64}
		if b >= 0 {
			o.Return = ret.UnixNano()
		}
		return o
	}
	ms := func(d int) int64 { return base.UnixMilli() + int64(d) }
	checkout := linInput{Kind: linCheckout, ID: "a", TTL: 1000, Token: "g1"}
	created := linOutput{Code: codes.OK, Created: true, Status: pending, Deadline: ms(1005), Token: "g1"}
	get := linInput{Kind: linGet, ID: "a"}
	complete := linInput{Kind: linComplete, ID: "a"}
	// asStatus is the order created shows with another status.
	asStatus := func(o linOutput, s pb.OrderStatus) linOutput {
		o.Created, o.Status = false, s
		return o
	}
	cases := []struct {
		name    string
		history []porcupine.Operation
		want    porcupine.CheckResult
	}{
		{"checkout, get before and after the deadline", []porcupine.Operation{
			op(0, checkout, created, 0, 10),
			op(1, get, asStatus(created, pending), 500, 510),
			op(1, get, asStatus(created, expired), 1100, 1110),
		}, porcupine.Ok},
		{"pending seen after expired", []porcupine.Operation{
			op(0, checkout, created, 0, 10),
			op(1, get, asStatus(created, expired), 1100, 1110),
			op(1, get, asStatus(created, pending), 1120, 1130),
		}, porcupine.Illegal},
		{"pending seen well after the deadline", []porcupine.Operation{
			op(0, checkout, created, 0, 10),
			op(1, get, asStatus(created, pending), 1200, 1210),
		}, porcupine.Illegal},
		{"completed before the deadline", []porcupine.Operation{
			op(0, checkout, created, 0, 10),
			op(1, complete, asStatus(created, completed), 900, 910),
			op(1, get, asStatus(created, completed), 1200, 1210),
		}, porcupine.Ok},
		{"completed after the deadline", []porcupine.Operation{
			op(0, checkout, created, 0, 10),
			op(1, complete, asStatus(created, completed), 1100, 1110),
		}, porcupine.Illegal},
		{"completed, then expired", []porcupine.Operation{
			op(0, checkout, created, 0, 10),
			op(1, complete, asStatus(created, completed), 500, 510),
			op(1, get, asStatus(created, expired), 1200, 1210),
		}, porcupine.Illegal},
		{"an unknown complete that took effect", []porcupine.Operation{
			op(0, checkout, created, 0, 10),
			op(1, complete, linOutput{Unknown: true}, 500, -1),
			op(2, get, asStatus(created, completed), 1200, 1210),
		}, porcupine.Ok},
		{"an unknown checkout seen later", []porcupine.Operation{
			op(0, checkout, linOutput{Unknown: true}, 0, -1),
			op(1, get, asStatus(created, pending), 500, 510),
			op(1, get, asStatus(created, expired), 1100, 1110),
		}, porcupine.Ok},
		{"a failed complete of an order nobody closed", []porcupine.Operation{
			op(0, checkout, created, 0, 10),
			op(1, complete, linOutput{Code: codes.FailedPrecondition}, 500, 510),
		}, porcupine.Illegal},
		{"a second checkout of a pending order, with other metadata", []porcupine.Operation{
			op(0, checkout, created, 0, 10),
			op(1, linInput{Kind: linCheckout, ID: "a", TTL: 1000, Token: "g2"}, linOutput{Code: codes.AlreadyExists}, 500, 510),
		}, porcupine.Ok},
		{"a second checkout of a pending order, with other metadata, answered with the old order", []porcupine.Operation{
			op(0, checkout, created, 0, 10),
			op(1, linInput{Kind: linCheckout, ID: "a", TTL: 1000, Token: "g2"}, asStatus(created, pending), 500, 510),
		}, porcupine.Illegal},
		{"a second checkout that replaced a pending order", []porcupine.Operation{
			op(0, checkout, created, 0, 10),
			op(1, linInput{Kind: linCheckout, ID: "a", TTL: 1000, Token: "g2"},
				linOutput{Code: codes.OK, Created: true, Status: pending, Deadline: ms(1505), Token: "g2"}, 500, 510),
		}, porcupine.Illegal},
		{"reschedule keeps it pending past the old deadline", []porcupine.Operation{
			op(0, checkout, created, 0, 10),
			op(1, linInput{Kind: linReschedule, ID: "a", TTL: 2000, Expected: ms(1005)},
				linOutput{Code: codes.OK, Status: pending, Deadline: ms(2505), Token: "g1"}, 500, 510),
			op(1, get, linOutput{Code: codes.OK, Status: pending, Deadline: ms(2505), Token: "g1"}, 1500, 1510),
		}, porcupine.Ok},
		{"reschedule with a stale expected deadline", []porcupine.Operation{
			op(0, checkout, created, 0, 10),
			op(1, linInput{Kind: linReschedule, ID: "a", TTL: 2000, Expected: ms(999)},
				linOutput{Code: codes.OK, Status: pending, Deadline: ms(2505), Token: "g1"}, 500, 510),
		}, porcupine.Illegal},
	}
	model := linModel.ToModel()
	for _, c := range cases {
		if got := porcupine.CheckOperations(model, c.history); (got && c.want != porcupine.Ok) || (!got && c.want == porcupine.Ok) {
			t.Errorf("%s: linearizable=%v, want %s", c.name, got, c.want)
		}
	}
}
