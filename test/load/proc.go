package load

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat; it
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcSample is the CPU and memory of a process tree at one moment.
type ProcSample struct {
	CPUSeconds  float64 // utime + stime, all processes
	UserSeconds float64 // utime alone: CPUSeconds minus it is the kernel's share
	RSSKiB      int64   // VmRSS, summed
	HWMKiB      int64   // VmHWM (peak RSS), summed
	Procs       int
	SyscR       int64 // read-family syscalls (/proc/<pid>/io syscr), summed
	SyscW       int64 // write-family syscalls (syscw), summed
}

// Sample reads /proc for pid alone.
func Sample(pid int) (ProcSample, error) { return sample([]int{pid}) }

// SampleTree reads /proc for pid and its direct children (nginx's workers).
func SampleTree(pid int) (ProcSample, error) {
	return sample(append([]int{pid}, Children(pid)...))
}

func sample(pids []int) (ProcSample, error) {
	var s ProcSample
	for i, p := range pids {
		cpu, user, err := procCPU(p)
		if err != nil {
			if i == 0 {
				return s, err
			}
			continue // a child exited meanwhile
		}
		rss, hwm, err := procMem(p)
		if err != nil {
			continue
		}
		s.CPUSeconds += cpu
		s.UserSeconds += user
		s.RSSKiB += rss
		s.HWMKiB += hwm
		s.Procs++
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", p)); err == nil {
			r, w := parseIO(b)
			s.SyscR += r
			s.SyscW += w
		}
	}
	return s, nil
}

// procCPU returns utime+stime and utime of pid in seconds.
func procCPU(pid int) (cpu, user float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads fields 14 and 15 of /proc/<pid>/stat (utime and
// stime) and returns their sum and utime, in seconds; the command name
// (field 2) may hold spaces and parentheses, so fields are counted after the
// last ')'.
func parseStatCPU(b []byte) (cpu, user float64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("load: malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("load: short stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("load: malformed stat times")
	}
	return float64(ut+st) / clockTicks, float64(ut) / clockTicks, nil
}

// procMem returns VmRSS and VmHWM of pid in KiB.
func procMem(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	rss, hwm = parseStatusMem(b)
	return rss, hwm, nil
}

func parseStatusMem(b []byte) (rss, hwm int64) {
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

// Children returns the pids whose parent is pid.
func Children(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 {
			if pp, _ := strconv.Atoi(f[1]); pp == pid {
				out = append(out, p)
			}
		}
	}
	return out
}

// parseIO reads syscr and syscw from /proc/<pid>/io: the read and write
// system calls (read, recv*, readv... and write, send*, writev...) of all
// the process's threads.
func parseIO(b []byte) (syscr, syscw int64) {
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "syscr":
			syscr = n
		case "syscw":
			syscw = n
		}
	}
	return syscr, syscw
}

// TCPOutSegs is the machine's count of TCP segments sent (OutSegs in
// /proc/net/snmp): every process and every segment, ACKs included. Over a
// window it shows how many segments the writes became (the kernel coalesces
// small writes to a socket that still has unsent data).
func TCPOutSegs() (int64, error) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0, err
	}
	return parseOutSegs(b)
}

func parseOutSegs(b []byte) (int64, error) {
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "OutSegs" && i < len(f) {
				return strconv.ParseInt(f[i], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no Tcp OutSegs in /proc/net/snmp")
}
