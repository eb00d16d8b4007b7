//go:build race && (linux || darwin)

package proxy

import (
	"runtime"
	"unsafe"
)

// raceWrote and raceReads tell the race detector that the kernel wrote p (a
// read) or read it (a write), so that a race on a socket buffer is reported
// under -race as it is with syscall.Read and syscall.Write.
func raceWrote(p []byte) {
	if len(p) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(unsafe.SliceData(p)), len(p))
	}
}

func raceReads(p []byte) {
	if len(p) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(unsafe.SliceData(p)), len(p))
	}
}
