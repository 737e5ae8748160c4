package loadgen

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
)

// ProcStats is what the kernel says about a process at one moment.
type ProcStats struct {
	CPUSeconds float64 // user + system
	RSSBytes   int64   // VmRSS
	SyscW      int64   // write-like syscalls (write, writev, ...) from /proc/PID/io
}

// clkTck is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports.
const clkTck = 100

// ReadProc reads /proc/PID/{stat,status,io}.
func ReadProc(pid int) (ProcStats, error) {
	var s ProcStats
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return s, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("loadgen: %s/stat: unexpected format", dir)
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 13 {
		return s, fmt.Errorf("loadgen: %s/stat: unexpected format", dir)
	}
	utime, _ := strconv.ParseInt(string(f[11]), 10, 64) // field 14
	stime, _ := strconv.ParseInt(string(f[12]), 10, 64) // field 15
	s.CPUSeconds = float64(utime+stime) / clkTck

	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return s, err
	}
	s.RSSBytes = field(status, "VmRSS:") * 1024 // kB

	if io, err := os.ReadFile(dir + "/io"); err == nil {
		s.SyscW = field(io, "syscw:")
	}
	return s, nil
}

// field returns the first number after name in a /proc key-value file.
func field(b []byte, name string) int64 {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte(name)); ok {
			f := bytes.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(string(f[0]), 10, 64)
				return n
			}
		}
	}
	return 0
}

// ServerStats is one observation of the server under test.
type ServerStats struct {
	ProcStats
	NATSInMsgs uint64 // messages the NATS server has received (0: unknown)
	HeapInuse  uint64 // Go heap in use (0: unknown)
	StackInuse uint64
	Goroutines int
}

// Probe observes the server under test. GC asks it to collect garbage and
// return freed memory to the OS first (for RSS "after GC"), when it can.
type Probe interface {
	Stats(gc bool) (ServerStats, error)
	// Describe says what is measured, e.g. "pid 1234" or "this process
	// (server and load generator)".
	Describe() string
}

// PIDProbe observes another process through /proc only.
type PIDProbe struct{ PID int }

// Stats implements Probe; gc is ignored (another process cannot be made to
// collect).
func (p PIDProbe) Stats(bool) (ServerStats, error) {
	s, err := ReadProc(p.PID)
	return ServerStats{ProcStats: s}, err
}

// Describe implements Probe.
func (p PIDProbe) Describe() string { return fmt.Sprintf("pid %d", p.PID) }

// SelfProbe observes this process: an in-process server shares it with the
// load generator, so CPU, RSS and syscalls include the load generator's own.
type SelfProbe struct {
	// NATSInMsgs, when set, reports the embedded NATS server's in_msgs.
	NATSInMsgs func() uint64
}

// Stats implements Probe.
func (p SelfProbe) Stats(gc bool) (ServerStats, error) {
	if gc {
		runtime.GC()
		debug.FreeOSMemory()
	}
	ps, err := ReadProc(os.Getpid())
	s := ServerStats{ProcStats: ps}
	if p.NATSInMsgs != nil {
		s.NATSInMsgs = p.NATSInMsgs()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.HeapInuse, s.StackInuse, s.Goroutines = ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine()
	return s, err
}

// Describe implements Probe.
func (SelfProbe) Describe() string { return "this process (server and load generator)" }

// RaiseFileLimit raises RLIMIT_NOFILE to its hard limit and returns the
// new soft limit: every connection is a file descriptor, on both ends.
func RaiseFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	return l.Cur, nil
}
