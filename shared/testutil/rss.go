package testutil

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Memory is a settled reading of this process's memory: RSS is the resident
// set (from /proc), InUse what the Go runtime holds for live heap objects
// and goroutine stacks.
type Memory struct{ RSS, InUse int64 }

func (m Memory) String() string {
	return fmt.Sprintf("RSS %.1f MiB, heap+stacks in use %.1f MiB", mib(m.RSS), mib(m.InUse))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// SettledMemory reads Memory after a garbage collection that returns freed
// memory to the OS, so that two readings differ by what is still in use
// rather than by what the runtime has yet to give back. It skips the test
// where /proc is not available.
func SettledMemory(t testing.TB) Memory {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := Memory{InUse: int64(ms.HeapInuse + ms.StackInuse)}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			m.RSS = kb << 10
			return m
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return m
}

// MemoryBack waits until memory has come back to within slack of before
// (both RSS and what Go holds in use; RSS only without the race detector,
// whose shadow memory is never returned), failing the test otherwise, and
// logs before, peak and after.
func MemoryBack(t testing.TB, before, peak Memory, slack int64) {
	t.Helper()
	var after Memory
	Eventually(t, 10*time.Second, func() error {
		after = SettledMemory(t)
		if after.InUse > before.InUse+slack {
			return fmt.Errorf("heap+stacks in use %.1f MiB, %.1f MiB before (%.1f MiB at the peak)", mib(after.InUse), mib(before.InUse), mib(peak.InUse))
		}
		if !RaceEnabled && after.RSS > before.RSS+slack {
			return fmt.Errorf("RSS %.1f MiB, %.1f MiB before (%.1f MiB at the peak)", mib(after.RSS), mib(before.RSS), mib(peak.RSS))
		}
		return nil
	})
	note := ""
	if RaceEnabled {
		note = " (RSS not judged under -race)"
	}
	t.Logf("memory before: %s; at the peak: %s; after: %s%s", before, peak, after, note)
}
