package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// show prints m: as JSON with -o json (protojson, as the REST API writes
// it, indented), or as the table rows writes.
func (a *app) show(m proto.Message, rows func(t *table)) error {
	if a.output == "json" {
		return writeJSON(a.stdout, m, true)
	}
	t := &table{w: tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)}
	rows(t)
	return t.w.Flush()
}

// writeJSON writes m as one JSON value and a newline: indented, or on one
// line (a watch's events). protojson's own spacing varies on purpose, so
// it is normalized.
func writeJSON(w io.Writer, m proto.Message, indent bool) error {
	raw, err := protojson.MarshalOptions{EmitDefaultValues: true}.Marshal(m)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if indent {
		err = json.Indent(&b, raw, "", "  ")
	} else {
		err = json.Compact(&b, raw)
	}
	if err != nil {
		return err
	}
	b.WriteByte('\n')
	_, err = w.Write(b.Bytes())
	return err
}

// table writes aligned columns.
type table struct{ w *tabwriter.Writer }

func (t *table) row(cells ...string) { fmt.Fprintln(t.w, strings.Join(cells, "\t")) }

// when writes a time in UTC to the millisecond; "-" when unset.
func when(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format("2006-01-02T15:04:05.000Z")
}

// span writes a duration as the service's messages do ("15m", "1.5s");
// "-" when unset.
func span(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	return order.FormatDuration(d.AsDuration().Round(time.Millisecond))
}

// shortStatus is an order's status without its prefix: PENDING.
func shortStatus(s pb.OrderStatus) string {
	return strings.TrimPrefix(s.String(), "ORDER_STATUS_")
}

// pairs writes metadata as k=v, sorted by key; "-" when empty.
func pairs(md map[string]string) string {
	if len(md) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + md[k]
	}
	return strings.Join(out, ",")
}

// orderRows writes orders as a table.
func orderRows(t *table, orders ...*pb.Order) {
	t.row("ORDER", "STATUS", "DEADLINE", "REMAINING", "CLOSED", "RESCHEDULES", "METADATA")
	for _, o := range orders {
		t.row(o.GetOrderId(), shortStatus(o.GetStatus()), when(o.GetDeadline()), span(o.GetTtlRemaining()),
			when(o.GetClosedAt()), fmt.Sprint(o.GetReschedules()), pairs(o.GetMetadata()))
	}
}

// groupRows writes consumer groups as a table.
func groupRows(t *table, groups ...*pb.ConsumerGroup) {
	t.row("GROUP", "ACK-DEADLINE", "MAX-DELIVERIES", "BACKLOG", "IN-FLIGHT", "DEAD-LETTERS", "OLDEST-UNACKED", "PUSH")
	for _, g := range groups {
		push := "-"
		if p := g.GetPushConfig(); p != nil {
			push = p.GetUrl()
		}
		t.row(g.GetGroupId(), span(g.GetAckDeadline()), fmt.Sprint(g.GetMaxDeliveries()), fmt.Sprint(g.GetBacklog()),
			fmt.Sprint(g.GetInFlight()), fmt.Sprint(g.GetDeadLetters()), span(g.GetOldestUnackedAge()), push)
	}
}

// orDash writes s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
