package redisstore_test

import (
	"os/exec"
	"syscall"
)

// setPdeathsig kills redis-server if the test binary dies without cleaning
// up (a timeout panic, a kill), so no server outlives its test run.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
