package loadgen

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// si formats n with a k/M suffix.
func si(n float64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", n/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fk", n/1e3)
	default:
		return fmt.Sprintf("%.0f", n)
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// WriteText prints res for people.
func (res *Result) WriteText(w io.Writer) {
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	if res.Mode == ModeIdle {
		i := res.Idle
		p("mode idle: %d connections (%d still open), %d channel(s), after %.0fs\n", res.Receivers, i.Connected, res.Channels, res.Seconds)
		p("server (%s) RSS after GC: %s before, %s after: %.1f KiB per connection\n",
			i.Measured, mib(i.RSSBeforeBytes), mib(i.RSSAfterBytes), i.RSSPerConnBytes/1024)
		if i.HeapPerConnBytes != 0 {
			p("  Go heap %.1f KiB, stacks %.1f KiB, %.2f goroutines per connection\n",
				i.HeapPerConnBytes/1024, i.StackPerConn/1024, i.GoroutinesPer)
		}
		io.WriteString(w, b.String())
		return
	}
	if res.Mode == ModeBurst {
		br := res.Burst
		p("mode burst: %d receivers on one channel reading as fast as they can, one sender writing %d-byte lines unpaced\n",
			res.Receivers, res.Size)
		for _, t := range br.Trials {
			p("  %8d lines %9sB: %d of %d survived (%.1fs)", t.Lines, si(float64(t.Bytes)), t.Survived, res.Receivers, t.Seconds)
			if len(t.CloseCodes) > 0 {
				p(" %v", t.CloseCodes)
			}
			if t.RSSBytes > 0 {
				p(", server RSS %s", mib(t.RSSBytes))
			}
			p("\n")
		}
		p("largest burst every receiver survived: %d lines (%sB)", br.Largest, si(float64(br.LargestBytes)))
		if br.Capped {
			p(" (none failed: raise --burst-max)")
		}
		if br.PeakRSSBytes > 0 {
			p("; server peak RSS %s", mib(br.PeakRSSBytes))
		}
		p("\n")
		io.WriteString(w, b.String())
		return
	}
	rate := "flat out"
	if res.Mode == ModeFloor {
		rate = "one message at a time, plain TCP from every core"
		if res.TargetRate > 0 {
			rate += fmt.Sprintf(", at most %s msg/s", si(res.TargetRate))
		}
	} else if res.TargetRate > 0 {
		rate = fmt.Sprintf("%s msg/s offered", si(res.TargetRate))
	} else if res.Window > 0 {
		rate = fmt.Sprintf("flat out (window %d)", res.Window)
	}
	p("mode %s: %d senders, %d receivers", res.Mode, res.Senders, res.Receivers)
	if res.SlowReceivers > 0 {
		p(" (%d not reading)", res.SlowReceivers)
	}
	p(", %d channel(s), %d-byte messages, %s, %.1fs measured", res.Channels, res.Size, rate, res.Seconds)
	if res.NATSHeader {
		p(", with the Relay-Format header")
	}
	p("\n")
	p("offered     %12s msg/s\n", si(res.OfferedPerSec))
	if res.NATSInPerSec > 0 {
		p("into NATS   %12s msg/s\n", si(res.NATSInPerSec))
	}
	if res.Receivers > 0 {
		p("delivered   %12s msg/s\n", si(res.DeliveredMsgsPerSec))
		p("deliveries  %12s /s\n", si(res.DeliveriesPerSec))
		l := res.Latency
		p("latency ms  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  (%d samples)\n", l.P50, l.P90, l.P99, l.P999, l.Max, l.Count)
		p("loss        %d of %d deliveries (%.4f%%)", res.Lost, res.Expected, 100*res.LossFraction)
		if res.Disconnected > 0 {
			p(", %d reading receivers disconnected", res.Disconnected)
		}
		p("\n")
		if res.SlowReceivers > 0 {
			p("slow        %d of %d non-reading receivers were cut off by the server\n", res.SlowClosed, res.SlowReceivers)
		}
		if len(res.CloseCodes) > 0 {
			codes := make([]string, 0, len(res.CloseCodes))
			for c, n := range res.CloseCodes {
				codes = append(codes, fmt.Sprintf("%s×%d", c, n))
			}
			sort.Strings(codes)
			p("close codes %s\n", strings.Join(codes, " "))
		}
	}
	if s := res.Server; s != nil {
		p("server      %s: cpu %.2fs (%.2f cores), RSS %s, %d write syscalls", s.Measured, s.CPUSeconds, s.CPUCores, mib(s.RSSBytes), s.SyscW)
		if s.WritesPerDelivery > 0 {
			p(", %.4f per delivery", s.WritesPerDelivery)
		}
		p("\n")
	}
	if g := res.LoadGen; g != nil {
		p("load gen    this process: cpu %.2fs (%.2f cores)", g.CPUSeconds, g.CPUCores)
		if g.MicrosPerDelivery > 0 {
			p("; cpu per delivery: %.2f µs here", g.MicrosPerDelivery)
			if g.ServerMicrosPerDelivery > 0 {
				p(" + %.2f µs server", g.ServerMicrosPerDelivery)
			}
		}
		p("\n")
	}
	io.WriteString(w, b.String())
}
