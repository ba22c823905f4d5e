package serverproc

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal has the kernel kill the server when the program that
// started it dies without stopping it (a test binary's panic or -timeout,
// an interrupted benchmark), so that no server outlives it. (The signal
// follows the OS thread that started the server; the Go runtime keeps its
// threads unless a goroutine exits while locked to one.)
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
