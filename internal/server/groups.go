package server

import (
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/rpc"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// GroupsConfig bounds the consumer groups (rpc.GroupLimits, whose defaults
// are rpc.DefaultGroupLimits, and the consumers a group's deliveries may
// be held by in the store) and names the groups file.
type GroupsConfig struct {
	rpc.GroupLimits
	// MaxGroupConsumers bounds the consumer names that hold deliveries of
	// one group in the store.
	MaxGroupConsumers int
	// File names the groups file, and FileGroups are its groups: every
	// replica creates those missing at its start and whenever the store
	// can serve again (see groupsfile.go).
	File       string
	FileGroups []*pb.CreateConsumerGroupRequest
}

func (c *GroupsConfig) register(o *options) {
	o.Int(&c.MaxGroups, "max-groups", "MAX_GROUPS", rpc.DefaultGroupLimits.MaxGroups, "consumer groups the store may hold")
	o.Int(&c.MaxConsumers, "max-consumers", "MAX_CONSUMERS", rpc.DefaultGroupLimits.MaxConsumers, "ConsumeExpirations streams of one group one replica serves at once")
	o.Int(&c.MaxGroupConsumers, "max-group-consumers", "MAX_GROUP_CONSUMERS", order.DefaultMaxGroupConsumers, "consumer names that may hold deliveries of one group at once (on each partition of a Redis store); past it a new name is refused until one settles or lapses")
	o.Int(&c.MaxInFlight, "max-in-flight", "MAX_IN_FLIGHT", rpc.DefaultGroupLimits.MaxInFlight, "largest max_in_flight of a consumer's stream and max_events of a pull")
	o.String(&c.File, "groups-file", "GROUPS_FILE", "", "YAML or JSON file of consumer groups (push groups too) that every replica creates when missing, at its start and whenever the store can serve again, as after Redis was emptied; empty: none")
}

// parse checks the bounds and reads the groups file, so that a mistake in
// it stops the start.
func (c *GroupsConfig) parse(*options) error {
	if err := c.validate(); err != nil {
		return err
	}
	if c.File != "" {
		groups, err := loadGroupsFile(c.File)
		if err != nil {
			return err
		}
		c.FileGroups = groups
	}
	return nil
}

// validate checks the bounds: each lets at least one through.
func (c *GroupsConfig) validate() error {
	for _, b := range []struct {
		flag string
		n    int
	}{
		{"max-groups", c.MaxGroups}, {"max-consumers", c.MaxConsumers},
		{"max-group-consumers", c.MaxGroupConsumers}, {"max-in-flight", c.MaxInFlight},
	} {
		if b.n < 1 {
			return optionErrorf(b.flag, "-max-groups, -max-consumers, -max-group-consumers and -max-in-flight must be at least 1, got %d", b.n)
		}
	}
	return nil
}
