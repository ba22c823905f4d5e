//go:build !linux

package redistest

import "os/exec"

// setParentDeathSignal does nothing where the kernel has no parent-death
// signal; a test binary that dies without its cleanups may leave a server
// behind there.
func setParentDeathSignal(*exec.Cmd) {}
