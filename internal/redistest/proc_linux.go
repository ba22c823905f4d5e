package redistest

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal has the kernel kill the server when the test binary
// dies without running its cleanups (a panic or a -timeout), so that no
// redis-server outlives its tests. (The signal follows the OS thread that
// started the server; the Go runtime keeps its threads unless a goroutine
// exits while locked to one, which these tests never do.)
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
