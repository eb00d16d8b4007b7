//go:build !linux && !darwin

package proxy

import (
	"errors"
	"syscall"
)

// sysRead and sysWrite: see rawsys.go.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return errnoOf(n, err)
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return errnoOf(n, err)
}

func errnoOf(n int, err error) (int, syscall.Errno) {
	var e syscall.Errno
	if err != nil && !errors.As(err, &e) {
		e = syscall.EIO
	}
	if e != 0 {
		return 0, e
	}
	return n, 0
}
