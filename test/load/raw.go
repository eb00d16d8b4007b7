package load

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// RawWrite is the raw bound (S5): a plain Go program that accepts conns
// connections on ln and then, for dur, writes size-byte messages to each of
// them as fast as the kernel takes them, one goroutine per connection. It
// returns the writes done and the time they took.
func RawWrite(ln net.Listener, conns, size int, dur time.Duration) (int64, time.Duration, error) {
	cs := make([]net.Conn, 0, conns)
	for len(cs) < conns {
		c, err := ln.Accept()
		if err != nil {
			return 0, 0, err
		}
		cs = append(cs, c)
	}
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = 'x'
	}
	msg[size-1] = '\n'
	var writes atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			var n int64
			for i := 0; ; i++ {
				if i%64 == 0 && time.Now().After(deadline) {
					break
				}
				if _, err := c.Write(msg); err != nil {
					break
				}
				n++
			}
			writes.Add(n)
		}()
	}
	wg.Wait()
	return writes.Load(), time.Since(start), nil
}

// RawRead dials conns connections to addr and reads (and drops) everything
// until each is closed; it returns the bytes read. started is closed once
// every connection is open.
func RawRead(addr string, conns int, sources []net.IP, started chan<- struct{}) (int64, error) {
	sw := &Swarm{cfg: SwarmConfig{Sources: sources}}
	cs := make([]net.Conn, 0, conns)
	for i := range conns {
		c, err := sw.dialer(i).Dial("tcp", addr)
		if err != nil {
			for _, c := range cs {
				c.Close()
			}
			return 0, err
		}
		cs = append(cs, c)
	}
	close(started)
	var total atomic.Int64
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				total.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return total.Load(), nil
}
