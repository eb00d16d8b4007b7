//go:build linux || darwin

package proxy

import (
	"syscall"
	"unsafe"
)

// sysRead and sysWrite are read(2) and write(2) on a non-blocking socket,
// made with syscall.RawSyscall, which does not tell the Go scheduler that the
// goroutine is in a system call. Such a call never waits (a full socket
// returns EAGAIN), so the scheduler has nothing to hand off while it runs.
// The bookkeeping Syscall does instead (entersyscall, exitsyscall, and the
// scheduler's monitor thread that an entersyscall wakes from its deep sleep)
// was about a tenth of lastevent's CPU in the S1 profile, where every event is
// one upstream read, one failed read before parking, and one client write.
// Both retry on EINTR and return a count of at least 0. Elsewhere (OpenBSD's
// RawSyscall is a stub) they are syscall.Read and syscall.Write
// (rawsys_other.go). Under -race they tell the race detector what the kernel
// wrote or read, as syscall.Read and syscall.Write do (rawsys_race.go).
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		if e != syscall.EINTR {
			n, e := rawCount(r, e)
			raceWrote(p[:n])
			return n, e
		}
	}
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	raceReads(p)
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		if e != syscall.EINTR {
			return rawCount(r, e)
		}
	}
}

func rawCount(n uintptr, e syscall.Errno) (int, syscall.Errno) {
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}
