//go:build !linux

package serverproc

import "os/exec"

// setParentDeathSignal does nothing where the kernel has no parent-death
// signal; a program that dies without stopping its server may leave it
// behind there.
func setParentDeathSignal(*exec.Cmd) {}
