package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/orderexpiry/orderexpiry/internal/backoff"
	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// The groups file (-groups-file) declares consumer groups, push groups
// included, that every replica creates when it starts and whenever the
// store becomes able to serve again after it could not (Redis emptied and
// the store renewed, Redis restarted from older data, an outage): a group
// that is missing is created, one with the same settings is left as it is,
// and one with other settings is left as it is too, with an error in the
// log that says so (deleting it would drop its deliveries and dead
// letters). Each entry of its "groups" list is the body of a
// CreateConsumerGroup request, in YAML or JSON:
//
//	groups:
//	  - group_id: payments
//	    ack_deadline: 30s
//	    max_deliveries: 5
//	  - group_id: hooks
//	    push_config: {url: "https://hooks.example.com/expired", secret: "whsec_…"}

// loadGroupsFile reads the groups file: YAML or JSON (JSON is YAML), each
// entry checked against CreateConsumerGroupRequest's fields, an unknown
// field or a group named twice refused.
func loadGroupsFile(path string) ([]*pb.CreateConsumerGroupRequest, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-groups-file: %w", err)
	}
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return nil, fmt.Errorf("-groups-file %s: not YAML or JSON: %w", path, err)
	}
	var doc struct {
		Groups []json.RawMessage `json:"groups"`
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("-groups-file %s: want a map with one key, groups, a list of groups: %w", path, err)
	}
	var out []*pb.CreateConsumerGroupRequest
	seen := map[string]bool{}
	for i, g := range doc.Groups {
		req := &pb.CreateConsumerGroupRequest{}
		if err := protojson.Unmarshal(g, req); err != nil {
			return nil, fmt.Errorf("-groups-file %s: groups[%d]: %w (the fields are those of a CreateConsumerGroup request: group_id, start_after_cursor, ack_deadline, max_deliveries, push_config)", path, i, err)
		}
		if seen[req.GetGroupId()] {
			return nil, fmt.Errorf("-groups-file %s: groups[%d]: group %q is named twice", path, i, req.GetGroupId())
		}
		seen[req.GetGroupId()] = true
		out = append(out, req)
	}
	return out, nil
}

// checkGroupsFile checks each group of the groups file as
// CreateConsumerGroup would, so that a mistake stops the start rather than
// surfacing later in the log.
func (s *Server) checkGroupsFile() error {
	for i, req := range s.cfg.Groups.FileGroups {
		if err := s.svc.CheckGroupRequest(req); err != nil {
			return fmt.Errorf("-groups-file %s: groups[%d] (%s): %w", s.cfg.Groups.File, i, req.GetGroupId(), err)
		}
	}
	return nil
}

// applyGroups creates the groups file's groups that are missing. It returns
// false when the store could not be reached, so that it is tried again.
func (s *Server) applyGroups(ctx context.Context) bool {
	var created, kept []string
	for _, req := range s.cfg.Groups.FileGroups {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, _, gerr := s.store.Group(cctx, req.GetGroupId())
		if gerr != nil && order.KindOf(gerr) != order.KindNotFound {
			cancel()
			return false
		}
		_, err := s.svc.CreateConsumerGroup(cctx, proto.Clone(req).(*pb.CreateConsumerGroupRequest))
		cancel()
		switch status.Code(err) {
		case codes.OK:
			if gerr != nil {
				created = append(created, req.GetGroupId())
			} else {
				kept = append(kept, req.GetGroupId())
			}
		case codes.AlreadyExists:
			s.log.Error("groups file: the group exists with other settings than the file gives; it is left as it is (delete it to have the file's settings applied by the next start, or when the store is emptied)",
				"group", req.GetGroupId(), "err", status.Convert(err).Message())
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			return false
		default:
			s.log.Error("groups file: cannot create the group", "group", req.GetGroupId(), "code", status.Code(err).String(), "err", status.Convert(err).Message())
		}
	}
	if len(created) > 0 {
		s.log.Warn("groups file: created the consumer groups that were missing", "groups", strings.Join(created, ","), "already_there", strings.Join(kept, ","))
	} else {
		s.log.Info("groups file: every consumer group is in place", "groups", strings.Join(kept, ","))
	}
	return true
}

// keepGroups applies the groups file whenever the store becomes able to
// serve: at the start, and after each time it could not (see the top of
// this file). It returns when ctx ends.
func (s *Server) keepGroups(ctx context.Context) {
	var bo backoff.Backoff
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.servingAgain:
		}
		for !s.applyGroups(ctx) {
			if !backoff.Sleep(ctx, bo.Next()) {
				return
			}
		}
		bo.Reset()
	}
}
