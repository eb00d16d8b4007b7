package proxy

import (
	"net"
	"syscall"
)

// rawSock reads and writes a socket's descriptor with sysRead and sysWrite,
// inside RawConn.Read and RawConn.Write (which hold the descriptor and, for a
// read, wait on the poller). The callbacks are bound once and their argument
// and results live here, so a call allocates nothing. It serves one goroutine
// at a time: the upstream's reader (streamConn), or whoever holds the
// client's mu (client.offer).
type rawSock struct {
	rc              syscall.RawConn
	readFn, writeFn func(fd uintptr) bool
	buf             []byte // the callback's argument
	n               int    // and its results
	errno           syscall.Errno
}

// newRawSock returns nil when c has no descriptor (a test's pipe).
func newRawSock(c net.Conn) *rawSock {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawSock{rc: rc}
	r.readFn, r.writeFn = r.readCB, r.writeCB
	return r
}

// read waits until p gets bytes, the peer ends (0, 0, nil) or the read
// deadline passes (the error from RawConn.Read).
func (r *rawSock) read(p []byte) (int, syscall.Errno, error) {
	r.buf = p
	err := r.rc.Read(r.readFn)
	r.buf = nil
	return r.n, r.errno, err
}

// write makes one attempt and never waits: a full socket gives EAGAIN.
func (r *rawSock) write(p []byte) (int, syscall.Errno, error) {
	r.buf = p
	err := r.rc.Write(r.writeFn)
	r.buf = nil
	return r.n, r.errno, err
}

// readCB returns false on EAGAIN: RawConn.Read then waits until the socket
// is readable and calls it again.
func (r *rawSock) readCB(fd uintptr) bool {
	n, errno := sysRead(fd, r.buf)
	if errno == syscall.EAGAIN {
		return false
	}
	r.n, r.errno = n, errno
	return true
}

func (r *rawSock) writeCB(fd uintptr) bool {
	r.n, r.errno = sysWrite(fd, r.buf)
	return true
}
