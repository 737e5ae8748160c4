package loadgen

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// runtimeStats is what StatsHandler reports about the server's process.
type runtimeStats struct {
	NATSInMsgs uint64 `json:"nats_in_msgs"`
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	Goroutines int    `json:"goroutines"`
}

// DebugHandler is served by a bench server process (`relay bench --serve`)
// on loopback: /debug/pprof/ for profiles, and /bench/stats for the Go
// runtime's and the embedded NATS server's figures; ?gc=1 first collects
// garbage and returns freed memory to the OS, so RSS can be read "after GC".
func DebugHandler(natsInMsgs func() uint64) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/bench/stats", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") == "1" {
			runtime.GC()
			debug.FreeOSMemory()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		st := runtimeStats{HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse, Goroutines: runtime.NumGoroutine()}
		if natsInMsgs != nil {
			st.NATSInMsgs = natsInMsgs()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	return mux
}

// HTTPProbe observes a bench server process: /proc/PID plus its
// DebugHandler at URL (http://host:port).
type HTTPProbe struct {
	PID int
	URL string
}

var probeClient = &http.Client{Timeout: 10 * time.Second}

// Stats implements Probe.
func (p HTTPProbe) Stats(gc bool) (ServerStats, error) {
	u := p.URL + "/bench/stats"
	if gc {
		u += "?gc=1"
	}
	resp, err := probeClient.Get(u)
	if err != nil {
		return ServerStats{}, err
	}
	defer resp.Body.Close()
	var rs runtimeStats
	if err := json.NewDecoder(resp.Body).Decode(&rs); err != nil {
		return ServerStats{}, fmt.Errorf("loadgen: %s: %w", u, err)
	}
	if gc {
		// FreeOSMemory has returned; give the kernel's RSS a moment.
		time.Sleep(100 * time.Millisecond)
	}
	ps, err := ReadProc(p.PID)
	return ServerStats{ProcStats: ps, NATSInMsgs: rs.NATSInMsgs, HeapInuse: rs.HeapInuse,
		StackInuse: rs.StackInuse, Goroutines: rs.Goroutines}, err
}

// Describe implements Probe.
func (p HTTPProbe) Describe() string { return fmt.Sprintf("server process pid %d", p.PID) }

// Machine describes the host a run was taken on.
type Machine struct {
	CPUs      int     `json:"cpus"`
	CPUModel  string  `json:"cpu_model"`
	GoVersion string  `json:"go_version"`
	Kernel    string  `json:"kernel"`
	Load1     float64 `json:"load1"` // 1-minute load average at the start
}

// ReadMachine reads /proc for Machine.
func ReadMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.Load1 = Load1()
	return m
}

// Load1 is the 1-minute load average (0 when unknown).
func Load1() float64 {
	var l float64
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Sscanf(string(b), "%f", &l)
	}
	return l
}
