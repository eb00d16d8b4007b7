package proxy

import (
	"os/exec"
	"syscall"
)

// setPdeathsig kills a server a test started if the test binary dies
// without cleaning up (a timeout panic, a kill).
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
