package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Consumer groups are Redis Streams consumer groups, one per partition's
// event stream, all under the group's id, with the group's settings in one
// hash beside them (groupsKey). Each event of a partition's stream is in the
// group's pending entries list (PEL) from its delivery until it is
// acknowledged (XACK); its owner is the consumer it was delivered to, its
// delivery count the attempt, its idle time what tells a due redelivery.
// Three consumer names are the store's own, beside the clients' ("c:<name>"):
//
//	dead     owns the dead letters: events that had all their deliveries.
//	         They stay in the PEL, so that trimming keeps them and a redrive
//	         can hand them back with XCLAIM.
//	back     owns the events nacked, each idle so that it is due when it
//	         is to be delivered again, to every consumer alike.
//	redriven owns the events put back from the dead letters, due at once
//	         with a delivery count of 0: apart from back, so that a group's
//	         state counts them as backlog (no consumer has them) without
//	         reading every entry.
//
// An event is a dead letter once its last delivery (a delivery count of
// max deliveries) is nacked, at once, or its ack deadline passes. The
// latter has no call to make it so at that moment, so every script that
// shows or hands back dead letters first gives dead the client consumers'
// entries that are past their deadline at their last delivery
// (buryLapsed), and an acknowledgement or nack of one does the same; the
// deliver script gives them to dead as it comes upon them. Nobody can
// then see such an event in flight after its deadline. Entries of back and
// redriven are never at their last delivery: a nack of one goes to dead.
//
// The scripts' flags (see scripts.go): creating a group is refused when
// Redis is full; delivering, settling and redriving run with allow-oom,
// since what they add to the pending list is bounded by the events there
// are, and an acknowledgement frees an entry; so do reading a group's
// state and its dead letters, which may give lapsed entries to dead first.
//
// A nack gives an entry to back with an idle time of the ack deadline less
// retry_after, so that it is due again after retry_after, as an
// unacknowledged one is after the ack deadline. An entry whose deadline
// lapsed at a consumer is due to that same consumer only
// order.Group.OwnRedeliveryDelay later than to the others.
//
// Why a dead letter failed is kept beside the PEL, in a hash per partition
// and group (whyKey): entry id -> "<first delivery ms> <last delivery ms>"
// and, once a delivery was nacked, " <attempt> <nack ms> <reason>". The
// deliver script writes the times, a nack the rest; an acknowledgement, a
// redrive and the trimming of the entry (found when it is next read)
// delete the field, and DeleteGroup the hash, so that it holds no more
// than the PEL. A dead letter whose last delivery was not the one nacked
// lapsed: its reason is order.ReasonAckDeadline, at its last delivery plus
// the ack deadline.

// groupsKey is the hash of every group's settings: id -> "<ack deadline ms>
// <max deliveries> <created ms> <start>", the start being the position the
// group started after, so that an ack id of an event before it is unknown
// to the group. A push group's record goes on with "<max concurrency>
// <timeout ms> <url> <secret>" (neither has a space: the service refuses
// a URL with one, and a secret is base64), so that every replica can
// deliver and sign its events.
const groupsKey = "oe:groups"

const (
	// settingsTTL is how long a replica trusts its copy of a group's
	// settings: they never change, but a group may be deleted and created
	// again with others.
	settingsTTL = time.Second
)

func consumerName(c string) string { return "c:" + c }

// settings are a group's settings and where it started.
type settings struct {
	order.Group
	start order.Cursor
}

// cachedSettings are a replica's copy of a group's settings.
type cachedSettings struct {
	settings
	at time.Time
}

// groupCache holds the settings of the groups this replica serves.
type groupCache struct {
	mu sync.Mutex
	m  map[string]cachedSettings
}

func (c *groupCache) get(id string) (settings, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	if !ok || time.Since(e.at) > settingsTTL {
		return settings{}, false
	}
	return e.settings, true
}

func (c *groupCache) put(g settings) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]cachedSettings)
	}
	c.m[g.ID] = cachedSettings{settings: g, at: time.Now()}
}

func (c *groupCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

// pushRecord is a push group's part of its settings record: "<max
// concurrency> <timeout ms> <url> <secret>"; empty for a group without
// push. An error is KindInvalid: a URL or secret with a space in it would
// not read back.
func pushRecord(p order.PushConfig) (string, error) {
	if !p.Enabled() {
		return "", nil
	}
	if p.Secret == "" || strings.ContainsFunc(p.URL+p.Secret, unicode.IsSpace) {
		return "", order.Errorf(order.KindInvalid, "push url and secret must be set and hold no spaces; percent-encode the url's")
	}
	return fmt.Sprintf("%d %d %s %s", p.MaxConcurrency, p.Timeout.Milliseconds(), p.URL, p.Secret), nil
}

// parseSettings reads a group's settings: "<ack ms> <max deliveries>
// <created ms> <start>", and for a push group "<max concurrency> <timeout
// ms> <url> <secret>" after them. The error never holds the record, which
// may hold a secret.
func parseSettings(id, rec string, partitions int) (settings, error) {
	f := strings.Fields(rec)
	if len(f) != 4 && len(f) != 8 {
		return settings{}, fmt.Errorf("malformed settings of group %q: %d fields", id, len(f))
	}
	var n [5]int64
	for i, at := range []int{0, 1, 2, 4, 5} {
		if at >= len(f) {
			break
		}
		v, err := strconv.ParseInt(f[at], 10, 64)
		if err != nil {
			return settings{}, fmt.Errorf("malformed settings of group %q: field %d is %q, not a number", id, at+1, f[at])
		}
		n[i] = v
	}
	start, err := order.ParseCursor("start_after_cursor", f[3])
	if err != nil || len(start) != partitions {
		return settings{}, fmt.Errorf("malformed start of group %q: %q", id, f[3])
	}
	g := order.Group{ID: id, AckDeadline: time.Duration(n[0]) * time.Millisecond, MaxDeliveries: int(n[1]), CreatedAt: time.UnixMilli(n[2])}
	if len(f) == 8 {
		g.Push = order.PushConfig{URL: f[6], Secret: f[7], MaxConcurrency: int(n[3]), Timeout: time.Duration(n[4]) * time.Millisecond}
	}
	return settings{Group: g, start: start}, nil
}

// CreateGroup creates a consumer group, or answers the one that exists with
// the same settings. Its groups on the partitions' streams are created
// after its settings: a call that failed between the two is finished by the
// next CreateGroup of the same group.
func (s *Store) CreateGroup(ctx context.Context, g order.Group, start order.Cursor, maxGroups int) (order.Group, bool, error) {
	parts, err := s.layout(ctx)
	if err != nil {
		return order.Group{}, false, err
	}
	if start != nil && len(start) != len(parts) {
		return order.Group{}, false, order.Fail(order.ReasonInvalidCursor, "", "the start cursor has %d part(s), but this service's expiration log has %d partition(s)", len(start), len(parts))
	}
	if start != nil {
		if err := s.CheckCursor(ctx, start...); err != nil {
			return order.Group{}, false, err
		}
	} else if start, err = s.tails(ctx, parts); err != nil {
		return order.Group{}, false, err
	}
	push, err := pushRecord(g.Push)
	if err != nil {
		return order.Group{}, false, err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var created *redis.Cmd
	if err := s.durablyOn(cctx, []string{groupsKey}, func(pipe durablePipe, _ int) {
		created = pipe.eval(cctx, createGroupScript, []string{groupsKey}, g.ID, g.AckDeadline.Milliseconds(), g.MaxDeliveries, maxGroups, start.String(), push)
	}); err != nil {
		return order.Group{}, false, err
	}
	res, err := created.StringSlice()
	if err != nil {
		return order.Group{}, false, storeError(err)
	}
	if res[0] == "full" {
		return order.Group{}, false, order.Fail(order.ReasonTooManyGroups, "", "there are %d consumer groups already, the most this service keeps; delete one first, or raise the limit", maxGroups)
	}
	got, err := parseSettings(g.ID, res[1], len(parts))
	if err != nil {
		return order.Group{}, false, s.corrupt(groupsKey, err, "field", g.ID)
	}
	if res[0] == "exists" && !got.SameSettings(g) {
		return order.Group{}, false, order.GroupExists(got.Group, g)
	}
	// At the recorded start, which is this call's unless the group existed.
	cmds := make([]*redis.StatusCmd, len(parts))
	if err := s.durablyOn(cctx, eventKeys(parts), func(pipe durablePipe, i int) {
		cmds[i] = pipe.XGroupCreateMkStream(cctx, parts[i].keys.events, g.ID, got.start[i].String())
	}); err != nil {
		return order.Group{}, false, err
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
			return order.Group{}, false, storeError(err)
		}
	}
	s.groups.put(got)
	return got.Group, res[0] == "created", nil
}

// tails reads the offset of every partition's last event, in one round trip.
func (s *Store) tails(ctx context.Context, parts []*partition) (order.Cursor, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.XMessageSliceCmd, len(parts))
	for i, p := range parts {
		cmds[i] = pipe.XRevRangeN(ctx, p.keys.events, "+", "-", 1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, storeError(err)
	}
	pos := make(order.Cursor, len(parts))
	for i, c := range cmds {
		if msgs := c.Val(); len(msgs) > 0 {
			var err error
			if pos[i], err = parseStreamID(msgs[0].ID); err != nil {
				return nil, s.corrupt(parts[i].keys.events, err)
			}
		}
	}
	return pos, nil
}

// group returns a group's settings, from this replica's copy when it is
// fresh.
func (s *Store) group(ctx context.Context, id string) (settings, error) {
	if g, ok := s.groups.get(id); ok {
		return g, nil
	}
	parts, err := s.layout(ctx)
	if err != nil {
		return settings{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	rec, err := s.rdb.HGet(ctx, groupsKey, id).Result()
	if errors.Is(err, redis.Nil) {
		return settings{}, order.GroupNotFound(id)
	}
	if err != nil {
		return settings{}, storeError(err)
	}
	g, err := parseSettings(id, rec, len(parts))
	if err != nil {
		return settings{}, s.corrupt(groupsKey, err, "field", id)
	}
	s.groups.put(g)
	return g, nil
}

// groupOn returns a group's settings and the store's partitions.
func (s *Store) groupOn(ctx context.Context, id string) (settings, []*partition, error) {
	g, err := s.group(ctx, id)
	if err != nil {
		return settings{}, nil, err
	}
	parts, err := s.layout(ctx)
	return g, parts, err
}

// Group returns a group and its state, summed over the partitions.
func (s *Store) Group(ctx context.Context, id string) (order.Group, order.GroupState, error) {
	g, parts, err := s.groupOn(ctx, id)
	if err != nil {
		return order.Group{}, order.GroupState{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(parts))
	for i, p := range parts {
		cmds[i] = queue(ctx, pipe, groupStateScript, []string{p.keys.events}, id, g.AckDeadline.Milliseconds(), g.MaxDeliveries)
	}
	// Exec's error is each command's: they are read below.
	_, _ = pipe.Exec(ctx)
	st := order.GroupState{Position: make(order.Cursor, len(parts))}
	var oldest int64
	for i, c := range cmds {
		res, err := c.Slice()
		if errors.Is(err, redis.Nil) {
			return order.Group{}, order.GroupState{}, s.groupMissing(id, i)
		}
		if err != nil {
			return order.Group{}, order.GroupState{}, storeError(err)
		}
		last, _ := res[0].(string)
		if st.Position[i], err = parseStreamID(last); err != nil {
			return order.Group{}, order.GroupState{}, s.corrupt(parts[i].keys.events, err, "group", id)
		}
		backlog, _ := res[1].(int64)
		inFlight, _ := res[2].(int64)
		dead, _ := res[3].(int64)
		st.Backlog += backlog
		st.InFlight += inFlight
		st.DeadLetters += dead
		if x, _ := res[4].(string); x != "" {
			ms, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				return order.Group{}, order.GroupState{}, s.corrupt(parts[i].keys.events, err, "group", id)
			}
			if oldest == 0 || ms < oldest {
				oldest = ms
			}
		}
	}
	if oldest != 0 {
		st.OldestUnacked = time.UnixMilli(oldest)
	}
	return g.Group, st, nil
}

// groupMissing is the error for a group whose settings exist but whose
// group on a partition's stream does not: its creation was cut short, or
// Redis lost the stream.
func (s *Store) groupMissing(id string, partition int) error {
	s.log.Error("a consumer group is missing on a partition's stream; create it again (same settings) to restore it", "group", id, "partition", partition)
	return &order.Error{Kind: order.KindFailedPrecondition, Reason: order.ReasonGroupIncomplete, Msg: fmt.Sprintf("consumer group %q is incomplete in the store (partition %d); create it again with the same settings to finish it", id, partition)}
}

// Groups returns every group, by id.
func (s *Store) Groups(ctx context.Context) ([]order.Group, error) {
	parts, err := s.layout(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	all, err := s.rdb.HGetAll(ctx, groupsKey).Result()
	if err != nil {
		return nil, storeError(err)
	}
	out := make([]order.Group, 0, len(all))
	for id, rec := range all {
		g, err := parseSettings(id, rec, len(parts))
		if err != nil {
			return nil, s.corrupt(groupsKey, err, "field", id)
		}
		out = append(out, g.Group)
	}
	slices.SortFunc(out, func(a, b order.Group) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// DeleteGroup deletes a group: its streams' groups, with their pending
// entries and dead letters, then its settings.
func (s *Store) DeleteGroup(ctx context.Context, id string) error {
	_, parts, err := s.groupOn(ctx, id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	// The streams' groups first, then, once every one is gone, the
	// settings: a call that fails between the two is finished by the next
	// DeleteGroup, which finds the settings. (One pipeline for both would
	// not do: on a cluster the settings' master may be written before
	// another that fails, and a pipeline goes on past a failed command.)
	cmds := make([]*redis.IntCmd, len(parts))
	if err := s.durablyOn(ctx, eventKeys(parts), func(pipe durablePipe, i int) {
		pipe.Del(ctx, whyKey(parts[i], id))
		cmds[i] = pipe.XGroupDestroy(ctx, parts[i].keys.events, id)
	}); err != nil {
		return err
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return storeError(err)
		}
	}
	var del *redis.IntCmd
	if err := s.durablyOn(ctx, []string{groupsKey}, func(pipe durablePipe, _ int) {
		del = pipe.HDel(ctx, groupsKey, id)
	}); err != nil {
		return err
	}
	if err := del.Err(); err != nil {
		return storeError(err)
	}
	s.groups.drop(id)
	return nil
}

// Deliver hands up to max events to a consumer, partition after partition,
// starting at a partition that turns with each call, so that one busy
// partition does not keep the others waiting.
func (s *Store) Deliver(ctx context.Context, group, consumer string, max int) ([]order.Delivery, error) {
	g, parts, err := s.groupOn(ctx, group)
	if err != nil {
		return nil, err
	}
	first := int(s.deliverTurn.Add(1)) % len(parts)
	var out []order.Delivery
	for i := range parts {
		if len(out) >= max {
			break
		}
		p := parts[(first+i)%len(parts)]
		ds, err := s.deliverPartition(ctx, p, g, consumer, max-len(out))
		if err != nil {
			return out, err
		}
		out = append(out, ds...)
	}
	return out, nil
}

// DeliverPartition is Deliver on one partition only: the one whose log just
// grew, when the caller knows it.
func (s *Store) DeliverPartition(ctx context.Context, partition int, group, consumer string, max int) ([]order.Delivery, error) {
	g, err := s.group(ctx, group)
	if err != nil {
		return nil, err
	}
	p, err := s.partition(ctx, partition)
	if err != nil {
		return nil, err
	}
	return s.deliverPartition(ctx, p, g, consumer, max)
}

func (s *Store) deliverPartition(ctx context.Context, p *partition, g settings, consumer string, max int) ([]order.Delivery, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	cmd, _ := s.runKeys(ctx, deliverScript, []string{p.keys.events, whyKey(p, g.ID)}, g.ID, consumerName(consumer), max,
		g.AckDeadline.Milliseconds(), g.MaxDeliveries, s.maxGroupConsumers, g.OwnRedeliveryDelay().Milliseconds())
	res, err := cmd.Slice()
	if err != nil {
		if redis.HasErrorPrefix(err, "NOGROUP") {
			return nil, s.groupMissing(g.ID, p.index)
		}
		return nil, storeError(err)
	}
	if len(res) == 2 && res[0] == "full" {
		return nil, order.TooManyConsumers(g.ID, s.maxGroupConsumers)
	}
	out := make([]order.Delivery, 0, len(res))
	for _, r := range res {
		ev, attempt, err := s.parseCounted(p, g.ID, r)
		if err != nil {
			return nil, err
		}
		out = append(out, order.Delivery{AckID: order.AckID{EventID: order.EventID{Partition: p.index, Offset: ev.Offset}, Attempt: attempt}, Event: ev})
	}
	return out, nil
}

// parseCounted reads an entry of a group script's reply, {id, delivery
// count, fields}, of partition p.
func (s *Store) parseCounted(p *partition, group string, r any) (order.Event, int, error) {
	e, _ := r.([]any)
	if len(e) < 3 {
		return order.Event{}, 0, s.corrupt(p.keys.events, fmt.Errorf("script reply %v", r), "group", group)
	}
	id, _ := e[0].(string)
	n, _ := e[1].(int64)
	fields, _ := e[2].([]any)
	m := redis.XMessage{ID: id, Values: make(map[string]any, len(fields)/2)}
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].(string)
		m.Values[k] = fields[i+1]
	}
	ev, err := parseEvent(m)
	if err != nil {
		return order.Event{}, 0, s.corrupt(p.keys.events, err, "entry", id)
	}
	ev.Partition = p.index
	return ev, int(n), nil
}

// Ack acknowledges deliveries.
func (s *Store) Ack(ctx context.Context, group string, ids []order.AckID) ([]order.AckStatus, error) {
	return s.settle(ctx, group, ids, "ack", "")
}

// Nack hands deliveries back, to be delivered again after retryAfter.
func (s *Store) Nack(ctx context.Context, group string, ids []order.AckID, retryAfter time.Duration, reason string) ([]order.AckStatus, error) {
	return s.settle(ctx, group, ids, max(retryAfter, 0).Milliseconds(), order.FailureReason(reason))
}

// Release hands deliveries back uncounted, due at once.
func (s *Store) Release(ctx context.Context, group string, ids []order.AckID) ([]order.AckStatus, error) {
	return s.settle(ctx, group, ids, "release", "")
}

// settle runs settleScript once per partition named by ids, in a pipeline.
func (s *Store) settle(ctx context.Context, group string, ids []order.AckID, how any, reason string) ([]order.AckStatus, error) {
	g, parts, err := s.groupOn(ctx, group)
	if err != nil {
		return nil, err
	}
	out := make([]order.AckStatus, len(ids))
	// The indexes of ids, by partition; ids of no partition are unknown.
	byPart := map[int][]int{}
	for i, id := range ids {
		if id.Partition >= len(parts) {
			out[i] = order.AckUnknown
			continue
		}
		byPart[id.Partition] = append(byPart[id.Partition], i)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	named := make([]int, 0, len(byPart))
	for p := range byPart {
		named = append(named, p)
	}
	keys := make([]string, len(named))
	for j, p := range named {
		keys[j] = parts[p].keys.events
	}
	cmds := map[int]*redis.Cmd{}
	if err := s.durablyOn(ctx, keys, func(pipe durablePipe, j int) {
		p := named[j]
		args := []any{g.ID, g.AckDeadline.Milliseconds(), how, g.start[p].String(), g.MaxDeliveries, reason}
		for _, i := range byPart[p] {
			args = append(args, ids[i].Offset.String(), ids[i].Attempt)
		}
		cmds[p] = pipe.eval(ctx, settleScript, []string{parts[p].keys.events, whyKey(parts[p], g.ID)}, args...)
	}); err != nil {
		return nil, err
	}
	for p, c := range cmds {
		res, err := c.Int64Slice()
		if err != nil {
			if redis.HasErrorPrefix(err, "NOGROUP") {
				return nil, s.groupMissing(g.ID, p)
			}
			return nil, storeError(err)
		}
		for j, i := range byPart[p] {
			out[i] = order.AckStatus(res[j])
		}
	}
	return out, nil
}

// DeadLetters lists a group's dead letters, partition after partition, each
// oldest first. The page token is the ID of the last letter returned.
func (s *Store) DeadLetters(ctx context.Context, group, pageToken string, limit int) ([]order.DeadLetter, string, error) {
	g, parts, err := s.groupOn(ctx, group)
	if err != nil {
		return nil, "", err
	}
	from, after := 0, "-"
	if pageToken != "" {
		id, ok := order.ParseEventID(pageToken)
		if !ok || id.Partition >= len(parts) {
			return nil, "", order.BadPageToken(pageToken)
		}
		from, after = id.Partition, "("+id.Offset.String()
	}
	var out []order.DeadLetter
	for p := from; p < len(parts) && len(out) < limit; p++ {
		if p != from {
			after = "-"
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		cmd, _ := s.runKeys(cctx, deadLettersScript, []string{parts[p].keys.events, whyKey(parts[p], group)}, group, after, limit-len(out), g.AckDeadline.Milliseconds(), g.MaxDeliveries)
		res, err := cmd.Slice()
		cancel()
		if err != nil {
			if redis.HasErrorPrefix(err, "NOGROUP") {
				return nil, "", s.groupMissing(group, p)
			}
			return nil, "", storeError(err)
		}
		for _, r := range res {
			ev, n, err := s.parseCounted(parts[p], group, r)
			if err != nil {
				return nil, "", err
			}
			l := order.DeadLetter{ID: order.EventID{Partition: p, Offset: ev.Offset}, Attempts: n, Event: ev}
			if e, _ := r.([]any); len(e) == 4 {
				if rec, _ := e[3].(string); rec != "" {
					if err := readWhy(&l, rec, g.AckDeadline); err != nil {
						return nil, "", s.corrupt(whyKey(parts[p], group), err, "field", ev.Offset.String())
					}
				}
			}
			out = append(out, l)
		}
	}
	next := ""
	if len(out) == limit {
		next = out[len(out)-1].ID.String()
	}
	return out, next, nil
}

// redriveBatch is how many dead letters one script call hands back.
const redriveBatch = 1000

// Redrive hands dead letters back: those named, or all.
func (s *Store) Redrive(ctx context.Context, group string, ids []string) (int, error) {
	g, parts, err := s.groupOn(ctx, group)
	if err != nil {
		return 0, err
	}
	byPart := map[int][]any{}
	for _, id := range ids {
		id, ok := order.ParseEventID(id)
		if ok && id.Partition < len(parts) {
			byPart[id.Partition] = append(byPart[id.Partition], id.Offset.String())
		}
	}
	run := func(p int, named []any) (int, error) {
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		var cmd *redis.Cmd
		if err := s.durablyOn(ctx, []string{parts[p].keys.events}, func(pipe durablePipe, _ int) {
			cmd = pipe.eval(ctx, redriveScript, []string{parts[p].keys.events, whyKey(parts[p], g.ID)}, append([]any{g.ID, g.AckDeadline.Milliseconds(), redriveBatch, g.MaxDeliveries}, named...)...)
		}); err != nil {
			return 0, err
		}
		n, err := cmd.Int()
		if redis.HasErrorPrefix(err, "NOGROUP") {
			return 0, s.groupMissing(g.ID, p)
		}
		return n, storeError(err)
	}
	total := 0
	if len(ids) > 0 {
		for p, named := range byPart {
			n, err := run(p, named)
			total += n
			if err != nil {
				return total, err
			}
		}
		return total, nil
	}
	for p := range parts {
		for {
			n, err := run(p, nil)
			total += n
			if err != nil {
				return total, err
			}
			if n < redriveBatch {
				break
			}
		}
	}
	return total, nil
}

// whyKey is the hash of why the deliveries of a group on partition p
// failed (see the top of this file); it shares the partition's hash tag.
func whyKey(p *partition, group string) string { return p.keys.events + ":why:" + group }

// readWhy fills in a dead letter's delivery times and why its last
// delivery failed from its why record, "<first ms> <last ms>[ <attempt>
// <nack ms> <reason>]". A letter whose last attempt was not the one nacked
// lapsed at its ack deadline.
func readWhy(l *order.DeadLetter, rec string, ackDeadline time.Duration) error {
	f := strings.SplitN(rec, " ", 5)
	if len(f) != 2 && len(f) != 5 {
		return fmt.Errorf("why record has %d fields", len(f))
	}
	var n [4]int64
	for i := range min(len(f), 4) {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return fmt.Errorf("why record field %d is %q, not a number", i+1, f[i])
		}
		n[i] = v
	}
	l.FirstDelivered, l.LastDelivered = time.UnixMilli(n[0]), time.UnixMilli(n[1])
	if len(f) == 5 && int(n[2]) == l.Attempts {
		l.Reason, l.FailedAt = f[4], time.UnixMilli(n[3])
		return nil
	}
	l.Reason, l.FailedAt = order.ReasonAckDeadline, l.LastDelivered.Add(ackDeadline)
	return nil
}
